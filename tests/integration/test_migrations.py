"""Upgrading a database that holds data: what a running deployment's ``clarion migrate`` does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from clarion.channels import INBOX
from clarion.db import subscribers
from clarion.db.migrate import upgrade
from clarion.db.models import Notification
from clarion.db.notifications import deliveries_of
from clarion.db.session import make_sessionmaker
from tests.conftest import PG_ADMIN


@pytest.fixture
def fresh_url() -> Iterator[str]:
    name = f"clarion_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        yield f"{base}/{name}"
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_0006_keeps_the_in_app_delivery_visible_and_stores_it_no_more(fresh_url):
    # A 0005 database with one notification shown in the inbox (and its old in-app "sent"
    # row) and one whose inbox was skipped (its in-app "skipped" row says why).
    upgrade(fresh_url, "0005")
    engine = create_engine(fresh_url)
    shown, hidden = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, data, seq, created_at, updated_at)"
                " VALUES ('ada', '{}', 2, now(), now())"
            )
        )
        for nid, seq, in_inbox in ((shown, 1, True), (hidden, 2, False)):
            conn.execute(
                text(
                    "INSERT INTO notifications (id, request_id, recipient_id, seq, category,"
                    " severity, title, metadata, in_inbox, created_at)"
                    " VALUES (:id, :id, 'ada', :seq, 'news', 'low', 't', '{}', :shown, now())"
                ),
                {"id": nid, "seq": seq, "shown": in_inbox},
            )
        conn.execute(
            text(
                "INSERT INTO deliveries (id, notification_id, channel, target, status, attempts,"
                " last_error, created_at, updated_at) VALUES"
                " (gen_random_uuid(), :shown, 'in_app', '', 'sent', 1, NULL, now(), now()),"
                " (gen_random_uuid(), :hidden, 'in_app', '', 'skipped', 0, 'opted out',"
                " now(), now())"
            ),
            {"shown": shown, "hidden": hidden},
        )

    upgrade(fresh_url)

    with engine.connect() as conn:
        stored = conn.execute(text("SELECT notification_id, status FROM deliveries")).all()
    assert stored == [(hidden, "skipped")]  # the skipped one keeps its reason
    with make_sessionmaker(engine)() as session:
        listed = {
            nid: [
                (d.channel, d.status, d.last_error)
                for d in deliveries_of(
                    session=session, notification=session.get(Notification, nid), inbox=INBOX
                )
            ]
            for nid in (shown, hidden)
        }
    assert listed == {
        shown: [("in_app", "sent", None)],
        hidden: [("in_app", "skipped", "opted out")],
    }
    engine.dispose()


def test_0008_keeps_every_delivery_and_lets_an_endpoint_get_a_notification_and_its_clicks(
    fresh_url,
):
    upgrade(fresh_url, "0006")
    engine = create_engine(fresh_url)
    nid, endpoint = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, data, seq, created_at, updated_at)"
                " VALUES ('ada', '{}', 1, now(), now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO notifications (id, request_id, recipient_id, seq, category,"
                " severity, title, metadata, created_at)"
                " VALUES (:id, :id, 'ada', 1, 'news', 'low', 't', '{}', now())"
            ),
            {"id": nid},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (id, notification_id, channel, target, status, attempts,"
                " created_at, updated_at)"
                " VALUES (gen_random_uuid(), :id, 'webhook', :ep, 'sent', 1, now(), now())"
            ),
            {"id": nid, "ep": str(endpoint)},
        )

    upgrade(fresh_url)

    click = (
        "INSERT INTO deliveries (id, notification_id, channel, target, status, attempts,"
        " created_at, updated_at, event)"
        " VALUES (gen_random_uuid(), :id, 'webhook', :ep, 'pending', 0, now(), now(), :event)"
    )
    with engine.begin() as conn:
        conn.execute(text(click), {"id": nid, "ep": str(endpoint), "event": "action:ok"})
        rows = conn.execute(text("SELECT status, event FROM deliveries ORDER BY event")).all()
        shown = conn.execute(
            text("SELECT snoozed_until, actions FROM notifications WHERE id = :id"), {"id": nid}
        ).one()
    assert rows == [("sent", ""), ("pending", "action:ok")]
    assert tuple(shown) == (None, None)
    with pytest.raises(IntegrityError), engine.begin() as conn:  # still one per event
        conn.execute(text(click), {"id": nid, "ep": str(endpoint), "event": "action:ok"})
    upgrade_down(fresh_url, "0006")
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM deliveries")) == 1
    engine.dispose()


def upgrade_down(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from clarion.db.migrate import migrations_dir

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.downgrade(config, revision)


def test_0018_keeps_a_dedupe_key_once_per_recipient_and_allows_keyless_repeats(fresh_url):
    upgrade(fresh_url, "0017")
    engine = create_engine(fresh_url)
    insert = text(
        "INSERT INTO notifications (id, request_id, recipient_id, seq, category, severity,"
        " title, metadata, dedupe_key, created_at)"
        " VALUES (gen_random_uuid(), gen_random_uuid(), :who, :seq, 'news', 'low', 't', '{}',"
        " :key, now())"
    )
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, data, seq, created_at, updated_at)"
                " VALUES ('ada', '{}', 0, now(), now()), ('bob', '{}', 0, now(), now())"
            )
        )
        conn.execute(insert, {"who": "ada", "seq": 1, "key": "k"})

    upgrade(fresh_url)

    with engine.begin() as conn:
        for seq in (2, 3):  # no key: as many as sent
            conn.execute(insert, {"who": "ada", "seq": seq, "key": None})
        conn.execute(insert, {"who": "bob", "seq": 1, "key": "k"})  # the key is per recipient
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"who": "ada", "seq": 4, "key": "k"})  # stored before the upgrade
    upgrade_down(fresh_url, "0017")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"who": "bob", "seq": 2, "key": "k"})
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM notifications")) == 4
    engine.dispose()


def test_0019_a_fan_out_advances_a_whole_page_of_new_subscribers_in_place(fresh_url):
    """Every row of a freshly filled page gets its next sequence number in one transaction
    (a fan-out batch) and stays on its page: a HOT update, no index entries. At 0018's
    fillfactor 70 most of them move."""
    upgrade(fresh_url)
    engine = create_engine(fresh_url)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    ids = [f"sub-{i:04d}" for i in range(600)]
    with sessions() as session, session.begin():
        subscribers.ensure(session=session, ids=ids, now=now)
    page_of = text("SELECT id, (ctid::text::point)[0] FROM subscribers")

    def reserve() -> dict[str, int]:
        with sessions() as session, session.begin():
            before = dict(session.execute(page_of).all())
            reserved = subscribers.reserve_seqs(
                session=session, counts=dict.fromkeys(ids, 1), now=now
            )
        assert reserved.seqs == dict.fromkeys(ids, reserved.seqs[ids[0]])
        with engine.connect() as conn:
            after = dict(conn.execute(page_of).all())
        return {i: after[i] != before[i] for i in ids}

    assert not any(reserve().values())  # none moved
    upgrade_down(fresh_url, "0018")
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE subscribers CASCADE"))
    with sessions() as session, session.begin():
        subscribers.ensure(session=session, ids=ids, now=now)
    assert sum(reserve().values()) > len(ids) / 3  # at fillfactor 70 many move
    with engine.connect() as conn:
        assert conn.scalar(
            text("SELECT reloptions FROM pg_class WHERE relname = 'subscribers'")
        ) == ["fillfactor=70"]
    engine.dispose()
