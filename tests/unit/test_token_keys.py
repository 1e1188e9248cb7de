"""User tokens and unsubscribe links: key ids, key rotation, the maximum lifetime, subjects."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import ValidationError

from clarion.channels.links import UNSUBSCRIBE_AUDIENCE, key_id, unsubscribe_token
from clarion.cli import main
from clarion.core.auth import (
    AuthError,
    TokenLifetimeError,
    issue_user_token,
    verify_unsubscribe_token,
    verify_user_claims,
    verify_user_token,
)
from clarion.settings import Settings

OLD, NEW = "o" * 40, "n" * 40
WEEK = 7 * 24 * 3600


def settings_with(secret: str = NEW, previous: list[tuple[str, datetime]] = (), **more):
    keys = [{"key": k, "until": until.isoformat()} for k, until in previous]
    return Settings(secret_key=secret, previous_secret_keys=keys, **more)


def in_days(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def user_claims(**claims) -> dict:
    now = int(time.time())
    return {"sub": "ada", "aud": "clarion", "iat": now, "exp": now + 600, **claims}


def test_what_clarion_signs_names_its_key_and_the_name_reveals_nothing():
    settings = settings_with(NEW)
    for token in (issue_user_token(settings, "ada"), unsubscribe_token(settings, "ada", "c", "e")):
        kid = jwt.get_unverified_header(token)["kid"]
        assert kid == key_id(NEW) != key_id(OLD)
        assert NEW[:8] not in kid and len(kid) == 12


def test_after_a_rotation_the_previous_key_verifies_until_its_time_and_never_signs():
    before = settings_with(OLD)
    token, link = issue_user_token(before, "ada"), unsubscribe_token(before, "ada", "news", "email")

    rotated = settings_with(NEW, [(OLD, in_days(30))])
    assert verify_user_token(rotated, token) == "ada"
    assert verify_unsubscribe_token(rotated, link) == ("ada", "news", "email")
    fresh = issue_user_token(rotated, "ada")
    assert jwt.get_unverified_header(fresh)["kid"] == key_id(NEW)
    jwt.decode(fresh, NEW, algorithms=["HS256"], audience="clarion")  # signed with the new key

    retired = settings_with(NEW, [(OLD, in_days(-1))])
    for check in (
        lambda: verify_user_token(retired, token),
        lambda: verify_unsubscribe_token(retired, link),
    ):
        with pytest.raises(AuthError):
            check()
    with pytest.raises(AuthError):  # not listed at all
        verify_unsubscribe_token(settings_with(NEW), link)


def test_links_sent_before_key_ids_keep_working_with_the_current_and_previous_keys():
    # The link format before key ids: no kid in the header.
    claims = {"sub": "ada", "cat": "news", "ch": "email", "aud": UNSUBSCRIBE_AUDIENCE}
    legacy = jwt.encode(claims, OLD, algorithm="HS256")
    assert "kid" not in jwt.get_unverified_header(legacy)

    assert verify_unsubscribe_token(settings_with(OLD), legacy) == ("ada", "news", "email")
    later = settings_with(NEW, [(OLD, in_days(365))])
    assert verify_unsubscribe_token(later, legacy) == ("ada", "news", "email")
    # A producer's own HS256 tokens signed with the shared secret carry no kid either.
    assert verify_user_token(later, jwt.encode(user_claims(), NEW)) == "ada"


def test_a_token_is_refused_past_the_maximum_lifetime_whatever_its_exp_says():
    settings = settings_with(NEW)
    now = int(time.time())
    ancient = jwt.encode(user_claims(iat=now - WEEK - 120, exp=now + 3600), NEW)
    with pytest.raises(AuthError, match="maximum lifetime"):
        verify_user_token(settings, ancient)

    # Within it, the token ends at the earlier of exp and iat + the maximum.
    aging = jwt.encode(user_claims(iat=now - WEEK + 60, exp=now + 3600), NEW)
    assert verify_user_claims(settings, aging).expires_at == now + 60
    young = jwt.encode(user_claims(iat=now, exp=now + 600), NEW)
    assert verify_user_claims(settings, young).expires_at == now + 600


def test_a_token_without_iat_must_expire_within_the_maximum_lifetime():
    settings = settings_with(NEW, user_token_max_lifetime_seconds=3600)
    now = int(time.time())
    short = user_claims(exp=now + 600)
    del short["iat"]
    assert verify_user_token(settings, jwt.encode(short, NEW)) == "ada"
    forever = {**short, "exp": now + 10 * 365 * 24 * 3600}
    with pytest.raises(AuthError, match="without iat"):
        verify_user_token(settings, jwt.encode(forever, NEW))


def test_tokens_longer_than_the_maximum_are_not_issued(monkeypatch, capsys):
    settings = settings_with(NEW, user_token_max_lifetime_seconds=3600)
    with pytest.raises(TokenLifetimeError):
        issue_user_token(settings, "ada", ttl_seconds=3601)
    with pytest.raises(ValidationError, match="CLARION_USER_TOKEN_MAX_LIFETIME_SECONDS"):
        Settings(secret_key=NEW, token_ttl_seconds=WEEK + 1)

    monkeypatch.setenv("CLARION_SECRET_KEY", NEW)
    with pytest.raises(SystemExit) as refused:
        main(["token", "ada", "--ttl", str(WEEK + 1)])
    assert "at most 604800 s" in str(refused.value.code)
    main(["token", "ada", "--ttl", str(WEEK)])
    assert verify_user_token(Settings(), capsys.readouterr().out.strip()) == "ada"


def test_previous_keys_are_read_from_the_environment_as_documented(monkeypatch):
    monkeypatch.setenv("CLARION_SECRET_KEY", NEW)
    monkeypatch.setenv(
        "CLARION_PREVIOUS_SECRET_KEYS", f'[{{"key": "{OLD}", "until": "2099-01-01T00:00:00Z"}}]'
    )
    assert verify_user_token(Settings(), issue_user_token(settings_with(OLD), "ada")) == "ada"


def test_previous_keys_are_checked_like_the_current_one():
    with pytest.raises(ValidationError, match="at least 32"):
        settings_with(NEW, [("short", in_days(1))])
    with pytest.raises(ValidationError, match="must not list the current"):
        settings_with(NEW, [(NEW, in_days(1))])
    with pytest.raises(ValidationError):  # a time without a zone is ambiguous
        Settings(secret_key=NEW, previous_secret_keys=[{"key": OLD, "until": "2030-01-01T00:00"}])
    assert OLD not in repr(settings_with(NEW, [(OLD, in_days(1))]))


@pytest.mark.parametrize(
    "subject", ["nul\x00inside", "lone \ud800 surrogate", "x" * 256, "", 42, ["ada"]]
)
def test_a_subject_that_is_not_a_storable_subscriber_id_is_refused(subject):
    token = jwt.encode(user_claims(sub=subject), NEW)
    with pytest.raises(AuthError):
        verify_user_token(settings_with(NEW), token)
