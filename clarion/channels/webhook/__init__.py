"""Signed webhooks to the producer's endpoints (``sender.py``)."""

from clarion.channels.registry import ChannelSpec

CHANNEL = ChannelSpec(
    key="webhook",
    sender="clarion.channels.webhook.sender:WebhookChannel",
    # The producer's own endpoints, not the subscriber's: no preference, quiet hours or
    # digest applies.
    subscriber_controlled=False,
    quiet_hours=False,
    digestible=False,
    needs="a webhook endpoint of the producer subscribed to the category",
)
