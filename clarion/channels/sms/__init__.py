"""SMS through the operator's Apprise SMS service (``sender.py``): Twilio, Vonage, SNS, ...

The subscriber's phone number is set through ``/v1/subscribers/{id}/addresses/sms``
(E.164, validated with phonenumbers); ``CLARION_SMS__URL`` names the service.
"""

from clarion.channels.registry import ChannelSpec

CHANNEL = ChannelSpec(
    key="sms",
    sender="clarion.channels.sms.sender:SmsChannel",
    subscriber_controlled=True,
    quiet_hours=True,
    digestible=True,
    template_fields=("text",),
    needs="the subscriber's phone number",
    settings="clarion.channels.sms.sender:SmsSettings",
    address="clarion.channels.sms.sender:check_address",
    # A crash re-sends up to a group of these (at-least-once), for a commit per group.
    outcomes_per_commit=25,
)
