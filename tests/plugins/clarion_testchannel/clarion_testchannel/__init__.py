"""A channel from outside Clarion: POSTs each notification as JSON to one URL.

Its spec is all Clarion reads until a worker builds the sender (``sender.py``).
"""

from clarion.channels.registry import ChannelSpec

CHANNEL = ChannelSpec(
    key="testchannel",
    sender="clarion_testchannel.sender:TestChannel",
    # Like email: the subscriber may switch it off, quiet hours defer it, digests hold it.
    subscriber_controlled=True,
    quiet_hours=True,
    digestible=True,
    template_fields=("subject", "text"),
    prefetch=2,
    needs="nothing: every subscriber is reachable at the one URL",
    settings="clarion_testchannel.sender:TestChannelSettings",
)
