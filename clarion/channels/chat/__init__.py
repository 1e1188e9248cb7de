"""Chat through Apprise (``sender.py``): Slack, Teams, Discord, Telegram, Matrix, ntfy, ...

Each subscriber may set their own chat URL (``/v1/subscribers/{id}/addresses/chat``), and
``CLARION_CHAT__CATEGORY_TARGETS`` sends a category to the producer's team channels too.
"""

from clarion.channels.registry import ChannelSpec

CHANNEL = ChannelSpec(
    key="chat",
    sender="clarion.channels.chat.sender:ChatChannel",
    subscriber_controlled=True,
    quiet_hours=True,
    digestible=True,
    template_fields=("subject", "text"),
    needs="the subscriber's chat URL, or a team channel configured for the category",
    settings="clarion.channels.chat.sender:ChatSettings",
    address="clarion.channels.chat.sender:check_address",
    # A crash re-sends up to a group of these (at-least-once), for a commit per group.
    outcomes_per_commit=25,
)
