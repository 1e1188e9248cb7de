"""Email over SMTP (``sender.py``; settings ``CLARION_SMTP_*``), MIME written in ``mime.py``."""

from clarion.channels.registry import ChannelSpec

CHANNEL = ChannelSpec(
    key="email",
    sender="clarion.channels.email.sender:EmailChannel",
    needs="the subscriber's email address",
    one_provider=True,
)
