"""The settings page's test notification: a real one, to the caller only, on the channels
they pick, through the one send path (``clarion.core.enqueue``).

Before it is sent, each channel is checked the way routing will see it, so the page can
say why one would not arrive: the channel is not configured in this deployment or the
user switched it off (``channel-disabled``), or the user has nowhere to receive it, no
email address or no push subscription (``no-target``). It is sent by the built-in
template ``clarion.test``, in the user's language, with the type that quiet hours and
digests leave alone (``preferences.TEST_TYPE``): the user is waiting for it.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy.orm import Session

from clarion.channels import INBOX, Channels
from clarion.core import enqueue
from clarion.core import preferences as prefs
from clarion.core.schemas import CreateMessage, NotificationCreate

CATEGORY = "test"
TEMPLATE = "clarion.test"
# The channels a subscriber can try ("all"): webhooks are the producer's, not theirs.
CHANNELS: tuple[str, ...] = prefs.SUBSCRIBER_CHANNELS
DISABLED, NO_TARGET = "channel-disabled", "no-target"


def check(
    *, session: Session, channels: Channels, recipient_id: str, wanted: list[str]
) -> tuple[list[str], dict[str, str]]:
    """(the wanted channels a test can go out on, {channel: why not} for the others)."""
    stored = prefs.load(session=session, recipients=[recipient_id]).get(recipient_id, prefs.EMPTY)
    usable: list[str] = []
    refused: dict[str, str] = {}
    for key in wanted:
        sender = channels.get(key) if key != INBOX else None
        if isinstance(sender, str) or stored.is_off(CATEGORY, key):
            refused[key] = DISABLED
        elif sender is not None and not sender.targets(
            session=session, recipients=[recipient_id], category=CATEGORY
        ).get(recipient_id):
            refused[key] = NO_TARGET
        else:
            usable.append(key)
    return usable, refused


def message(recipient_id: str, channels: list[str]) -> CreateMessage:
    """The test notification for ``recipient_id`` on ``channels``, ready to enqueue."""
    request = NotificationCreate(
        recipients=[recipient_id],
        category=CATEGORY,
        type=prefs.TEST_TYPE,
        severity="low",
        template=TEMPLATE,
        channels=channels,
    )
    return cast(CreateMessage, enqueue.prepare(request))  # recipients, not a topic
