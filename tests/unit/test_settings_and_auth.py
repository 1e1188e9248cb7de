"""Settings refusal rules, API key storage, token round trips, the idempotency store."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from clarion.channels import ChannelConfigError
from clarion.core.auth import AuthError, hash_key, issue_user_token, verify_user_token
from clarion.core.idempotency import MemoryIdempotencyStore
from clarion.runtime import Runtime
from clarion.settings import DEV_SECRET_KEY, Settings


def test_the_default_secret_is_refused_outside_embedded_mode(monkeypatch):
    monkeypatch.delenv("CLARION_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="CLARION_SECRET_KEY"):
        Settings(mode="server")
    assert Settings.embedded("/tmp/x").secret_key.get_secret_value() == DEV_SECRET_KEY


def test_short_secrets_are_refused():
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(secret_key="short")


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("CLARION_SECRET_KEY", "e" * 40)
    monkeypatch.setenv("CLARION_CATEGORY_CHANNELS", '{"campaigns": ["in_app", "email"]}')
    settings = Settings()
    assert settings.category_channels == {"campaigns": ["in_app", "email"]}
    assert settings.default_channels == []  # in-app alone


def test_unknown_channel_in_settings_is_refused_at_start(monkeypatch):
    # Channel names come from the channel registry, which settings cannot import: a
    # process checks them when it builds its runtime, before serving anything.
    monkeypatch.setenv("CLARION_SECRET_KEY", "e" * 40)
    monkeypatch.setenv("CLARION_CATEGORY_CHANNELS", '{"campaigns": ["fax"]}')
    with pytest.raises(ChannelConfigError, match=r"CLARION_CATEGORY_CHANNELS .*'fax'"):
        Runtime(Settings(database_url="sqlite://"))


def test_user_tokens_round_trip_and_expire():
    settings = Settings(secret_key="s" * 40)
    assert verify_user_token(settings, issue_user_token(settings, "u-1")) == "u-1"
    with pytest.raises(AuthError):
        verify_user_token(settings, issue_user_token(settings, "u-1", ttl_seconds=-120))
    with pytest.raises(AuthError):
        verify_user_token(Settings(secret_key="t" * 40), issue_user_token(settings, "u-1"))


def test_api_keys_are_hashed_not_stored(tmp_path):
    from clarion.core.auth import ApiKeyVerifier, create_api_key
    from clarion.db.migrate import upgrade
    from clarion.db.models import ApiKey
    from clarion.db.session import make_engine, make_sessionmaker, transaction

    url = f"sqlite:///{tmp_path / 'k.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    with transaction(sessions) as s:
        _, secret = create_api_key(session=s, name="ci", scopes=["notify"])
    with sessions() as s:
        row = s.query(ApiKey).one()
    assert secret not in (row.key_hash, row.prefix) and row.key_hash == hash_key(secret)
    assert ApiKeyVerifier(sessions, 0).verify(secret).allows("notify")
    assert not ApiKeyVerifier(sessions, 0).verify(secret).allows("admin")
    with pytest.raises(AuthError):
        ApiKeyVerifier(sessions, 0).verify(secret + "x")
    with pytest.raises(ValueError), transaction(sessions) as s:
        create_api_key(session=s, name="bad", scopes=["root"])


def test_idempotency_store_claims_replays_and_refuses_other_bodies():
    store = MemoryIdempotencyStore("memory://", ttl=60)
    assert store.claim("k", "body-1").outcome == "claimed"
    assert store.claim("k", "body-1").outcome == "in_progress"
    store.complete("k", "body-1", {"request_id": "r"})
    assert store.claim("k", "body-1").response == {"request_id": "r"}
    assert store.claim("k", "body-2").outcome == "mismatch"
    store.release("k")
    assert store.claim("k", "body-2").outcome == "claimed"


def test_idempotency_keys_expire():
    store = MemoryIdempotencyStore("memory://", ttl=0)
    store.complete("k", "body-1", {"request_id": "r"})
    assert store.claim("k", "body-2").outcome == "claimed"
