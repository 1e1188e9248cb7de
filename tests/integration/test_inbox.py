"""The end user's inbox API on PostgreSQL: listing, counts, flags, isolation, tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tests.broker import drain

INBOX = "/v1/me/notifications"


@pytest.fixture
def send(client, runtime, producer):
    """send(recipient, **fields) -> notification id, persisted by running the create task."""

    def _send(recipient: str = "alice", **fields) -> str:
        payload = {"recipients": [recipient], "category": "links", "title": "t", **fields}
        answer = client.post("/v1/notifications", json=payload, headers=producer).json()
        drain(runtime.celery)
        return answer["notifications"][0]["id"]

    return _send


def test_list_is_newest_first_and_cursor_pages_cover_everything_once(client, send, user):
    ids = [send(title=f"n{i}") for i in range(25)]
    seen, cursor = [], None
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get(INBOX, params=params, headers=user("alice")).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(ids))


def test_filters_by_category_severity_and_read_status(client, send, user):
    a = send(category="links", severity="high")
    b = send(category="campaigns")
    client.patch(f"{INBOX}/{b}", json={"read": True}, headers=user("alice"))

    def ids(**params):
        return [
            i["id"] for i in client.get(INBOX, params=params, headers=user("alice")).json()["items"]
        ]

    assert ids(category="links") == [a]
    assert ids(severity="high") == [a]
    assert ids(status="unread") == [a]
    assert ids(status="read") == [b]
    assert ids() == [b, a]


def test_unread_count_by_category_follows_reads(client, send, user):
    first = send(category="links")
    send(category="links")
    send(category="system")

    def count():
        return client.get(f"{INBOX}/unread-count", headers=user("alice")).json()

    assert count() == {"total": 3, "by_category": {"links": 2, "system": 1}, "unseen": 3}
    client.patch(f"{INBOX}/{first}", json={"read": True}, headers=user("alice"))
    assert count() == {"total": 2, "by_category": {"links": 1, "system": 1}, "unseen": 2}
    client.patch(f"{INBOX}/{first}", json={"read": False}, headers=user("alice"))
    assert count() == {"total": 3, "by_category": {"links": 2, "system": 1}, "unseen": 2}


def test_archive_moves_out_of_the_default_list_and_back(client, send, user):
    nid = send()
    patched = client.patch(f"{INBOX}/{nid}", json={"archived": True}, headers=user("alice"))

    assert patched.status_code == 200 and patched.json()["archived_at"] is not None
    assert client.get(INBOX, headers=user("alice")).json()["items"] == []
    archived = client.get(INBOX, params={"archived": True}, headers=user("alice")).json()
    assert [i["id"] for i in archived["items"]] == [nid]
    client.patch(f"{INBOX}/{nid}", json={"archived": False}, headers=user("alice"))
    assert len(client.get(INBOX, headers=user("alice")).json()["items"]) == 1


def test_read_all_optionally_per_category(client, send, user):
    send(category="links")
    send(category="links")
    send(category="system")

    links = client.post(f"{INBOX}/read-all", json={"category": "links"}, headers=user("alice"))
    rest = client.post(f"{INBOX}/read-all", headers=user("alice"))

    assert links.json() == {"updated": 2}
    assert rest.json() == {"updated": 1}
    assert client.get(f"{INBOX}/unread-count", headers=user("alice")).json()["total"] == 0


def test_delete_hides_the_notification(client, send, user):
    nid = send()

    assert client.delete(f"{INBOX}/{nid}", headers=user("alice")).status_code == 204
    assert client.get(INBOX, headers=user("alice")).json()["items"] == []
    assert client.delete(f"{INBOX}/{nid}", headers=user("alice")).status_code == 404
    assert client.get(f"{INBOX}/unread-count", headers=user("alice")).json()["total"] == 0


def test_another_users_notification_is_404_and_never_changes(client, send, user):
    nid = send("alice")

    assert client.get(INBOX, headers=user("mallory")).json()["items"] == []
    for call in (
        lambda: client.patch(f"{INBOX}/{nid}", json={"read": True}, headers=user("mallory")),
        lambda: client.delete(f"{INBOX}/{nid}", headers=user("mallory")),
    ):
        response = call()
        assert response.status_code == 404
        assert "alice" not in response.text
    assert client.post(f"{INBOX}/read-all", headers=user("mallory")).json() == {"updated": 0}
    mine = client.get(INBOX, headers=user("alice")).json()["items"]
    assert [i["id"] for i in mine] == [nid] and mine[0]["read_at"] is None


def test_patch_rejects_unknown_fields_and_bad_ids(client, send, user):
    nid = send()
    assert (
        client.patch(f"{INBOX}/{nid}", json={"pinned": True}, headers=user("alice")).status_code
        == 422
    )
    assert (
        client.patch(f"{INBOX}/not-a-uuid", json={"read": True}, headers=user("alice")).status_code
        == 422
    )
    assert client.get(INBOX, params={"limit": 1000}, headers=user("alice")).status_code == 422


def _token(settings, **claims) -> str:
    now = datetime.now(UTC)
    base = {"sub": "alice", "aud": "clarion", "iat": now, "exp": now + timedelta(minutes=5)}
    return jwt.encode({**base, **claims}, settings.secret_key.get_secret_value(), algorithm="HS256")


def _hs256_by_hand(claims: dict, key: bytes) -> str:
    # pyjwt refuses to HMAC with a PEM key, which is the point; an attacker would not.
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    signature = b64(hmac.new(key, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


def _unsigned(claims: dict) -> str:
    return jwt.encode(claims, key=None, algorithm="none")


@pytest.mark.parametrize(
    "make",
    [
        lambda s: _token(s, exp=datetime.now(UTC) - timedelta(minutes=5)),
        lambda s: _token(s, aud="someone-else"),
        lambda s: _unsigned({"sub": "alice", "aud": "clarion", "exp": 9999999999}),
        lambda s: jwt.encode({"sub": "alice", "aud": "clarion", "exp": 9999999999}, "x" * 40),
        lambda s: _token(s)[:-4] + "AAAA",
        lambda s: "not-a-jwt",
        lambda s: _token(s, sub=""),
    ],
    ids=["expired", "wrong-audience", "alg-none", "other-secret", "tampered", "garbage", "no-sub"],
)
def test_bad_user_tokens_are_401(client, send, settings, make):
    send()
    response = client.get(INBOX, headers={"Authorization": f"Bearer {make(settings)}"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_an_api_key_is_not_a_user_token(client, producer):
    assert client.get(INBOX, headers=producer).status_code == 401


def test_tokens_from_the_producers_own_auth_are_accepted_with_its_public_key(
    client, runtime, send, pg_url
):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.conftest import server_settings

    key = ec.generate_private_key(ec.SECP256R1())
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    runtime.settings = server_settings(
        pg_url, jwt_public_key=public, jwt_issuer="https://auth.test"
    )
    nid = send()
    claims = {
        "sub": "alice",
        "aud": "clarion",
        "iss": "https://auth.test",
        "exp": datetime.now(UTC) + timedelta(minutes=5),
    }

    good = jwt.encode(claims, key, algorithm="ES256")
    wrong_issuer = jwt.encode({**claims, "iss": "https://evil.test"}, key, algorithm="ES256")
    # Algorithm confusion: HS256 keyed with the public key's PEM text must not pass.
    confused = _hs256_by_hand({**claims, "exp": int(claims["exp"].timestamp())}, public.encode())

    assert (
        client.get(INBOX, headers={"Authorization": f"Bearer {good}"}).json()["items"][0]["id"]
        == nid
    )
    for bad in (wrong_issuer, confused):
        assert client.get(INBOX, headers={"Authorization": f"Bearer {bad}"}).status_code == 401


def test_unknown_cursor_value_just_pages_from_there(client, send, user):
    send()
    response = client.get(INBOX, params={"cursor": str(uuid.UUID(int=0))}, headers=user("alice"))
    assert response.status_code == 200 and response.json()["items"] == []
