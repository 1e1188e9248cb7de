"""The inbox: its delivery is the notification row, committed by the ``create`` transaction
and announced on the pub/sub backend afterwards, so it has no sender and no queue."""

from clarion.channels.registry import ChannelSpec

CHANNEL = ChannelSpec(
    key="in_app",
    sender=None,
    # Never held or deferred: the inbox shows it at once, even in quiet hours.
    quiet_hours=False,
    digestible=False,
    needs="nothing: every subscriber has an inbox",
)
