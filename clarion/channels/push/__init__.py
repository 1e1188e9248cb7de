"""Web push (RFC 8030/8291/8292; ``sender.py``; settings ``CLARION_VAPID_*``)."""

from clarion.channels.registry import ChannelSpec

CHANNEL = ChannelSpec(
    key="push",
    sender="clarion.channels.push.sender:WebPushChannel",
    # A notification on a device has a title and a short text, no HTML.
    template_fields=("subject", "text"),
    needs="a push subscription of the subscriber's browser or device",
    # A crash re-sends up to a group of these (at-least-once), for a commit per group.
    outcomes_per_commit=25,
)
