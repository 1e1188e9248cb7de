"""Real peers for the channel tests, one module per channel, each with a contract harness.

A harness is a pytest fixture named ``<key>_harness`` (registered in tests/conftest.py's
``pytest_plugins``) returning an object with:

* ``key``: the channel key;
* ``settings``: Settings overrides that point the channel at the running peer;
* ``bad_settings``: a list of overrides, each of which must make building the channel
  raise ``ChannelConfigError``;
* ``gone``: whether the channel's targets can be gone (web push 404/410, webhook 410);
* ``add_target(runtime, recipient)``: give the recipient one target on the channel;
* ``respond(mode)``: how the peer answers every following send: "ok", "transient",
  "permanent" or "gone";
* ``received()``: how many messages the peer accepted;
* ``target_active(runtime, recipient)``: whether the recipient's target is still active.

``tests/integration/test_channel_contract.py`` runs the same contract against each.
"""

from sqlalchemy import select

from clarion.db.models import DeliveryAttempt

# Retries a test can drain at once (the claim's one-second tolerance covers the delay).
FAST_RETRY = {"retry_backoff_seconds": 0.01, "retry_backoff_max_seconds": 0.05}


def outcomes(rt, delivery_id) -> list[str]:
    """A delivery's attempt outcomes, oldest first (its timeline)."""
    with rt.sessions() as s:
        return list(
            s.scalars(
                select(DeliveryAttempt.outcome)
                .where(DeliveryAttempt.delivery_id == delivery_id)
                .order_by(DeliveryAttempt.id)
            )
        )
