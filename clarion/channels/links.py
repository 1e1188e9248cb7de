"""The signed links a channel puts in a message: one-click unsubscribe (email) and the
push action token (web push). Minted here, below core, because the senders mint them;
verified in :mod:`clarion.core.auth`, which also signs user tokens with :func:`signing_key`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from datetime import timedelta

import jwt

from clarion.ids import utcnow
from clarion.settings import Settings


@functools.lru_cache(maxsize=16)
def key_id(secret: str) -> str:
    """The ``kid`` of an HS256 signing secret: names the key without revealing it."""
    digest = hashlib.sha256(b"clarion-kid\x00" + secret.encode()).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()


def signing_key(settings: Settings) -> tuple[str, dict[str, str]]:
    secret = settings.secret_key.get_secret_value()
    return secret, {"kid": key_id(secret)}


# One-click unsubscribe links (RFC 8058) carry a signed (subscriber, category, channel).
# They do not expire: an old email's link must still work (with a previous key too, until
# its time). A distinct audience keeps them from ever being accepted as user tokens, and
# user tokens from being accepted here.
UNSUBSCRIBE_AUDIENCE = "clarion:unsubscribe"


def unsubscribe_token(settings: Settings, subscriber_id: str, category: str, channel: str) -> str:
    claims = {"sub": subscriber_id, "cat": category, "ch": channel, "aud": UNSUBSCRIBE_AUDIENCE}
    secret, header = signing_key(settings)
    return jwt.encode(claims, secret, algorithm="HS256", headers=header)


# A push notification carries a token for itself: the site's service worker, which has no
# user token when the user clicks a push with no tab open, marks that one notification read
# or records a click on one of its actions with it, and can do nothing else. The payload
# is encrypted end to end to the browser; the token expires a week after the push can.
PUSH_ACTION_AUDIENCE = "clarion:push-action"
PUSH_ACTION_GRACE = timedelta(days=7)


def push_action_token(
    settings: Settings, subscriber_id: str, notification_id: str, ttl: timedelta
) -> str:
    """The token a push payload carries for its own notification."""
    claims = {
        "sub": subscriber_id,
        "nid": notification_id,
        "aud": PUSH_ACTION_AUDIENCE,
        "exp": utcnow() + ttl + PUSH_ACTION_GRACE,
    }
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm="HS256")
