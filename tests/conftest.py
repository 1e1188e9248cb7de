"""Fixtures on real services: a fresh PostgreSQL database per run, Redis DBs 14/15.

A missing service fails the run (it is never a skip): the Makefile starts PostgreSQL and
Redis when they are down, and CI must see them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from graphlib import TopologicalSorter

import psycopg
import pytest
import redis as redis_lib
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, text

from clarion.api.app import create_app
from clarion.core.auth import create_api_key, issue_user_token
from clarion.db.migrate import upgrade
from clarion.db.session import transaction
from clarion.runtime import Runtime
from clarion.settings import Settings

# Real peers for the channel tests (each module also provides its contract harness).
pytest_plugins = [
    "tests.channels.receiver",
    "tests.channels.smtp",
    "tests.channels.pushservice",
    "tests.channels.outbound_peers",
    "tests.channels.apprise_peer",
]

PG_ADMIN = os.environ.get("CLARION_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("CLARION_TEST_REDIS", "redis://127.0.0.1:6379")


def _redis_dbs() -> tuple[int, int]:
    """The broker and pub/sub DB numbers of this test process. Two concurrent runs (say, two
    checkouts) must not consume each other's broker messages: each run its own pair
    (CLARION_TEST_REDIS_DBS), and under pytest-xdist each worker the pair below the previous
    one's (gw0 14,15; gw1 12,13; ...), as each worker has its own database too."""
    broker, pubsub = map(int, os.environ.get("CLARION_TEST_REDIS_DBS", "14,15").split(","))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    broker, pubsub = broker - 2 * worker, pubsub - 2 * worker
    if min(broker, pubsub) < 0:
        raise pytest.UsageError(f"too many xdist workers for Redis DBs from {broker},{pubsub}")
    return broker, pubsub


BROKER_DB, PUBSUB_DB = _redis_dbs()
SECRET = "test-secret-" + "x" * 40
# The channel tests' peers (webhook receiver, push service) listen on loopback, which the
# outbound policy refuses by default: the tests allow it explicitly, and the tests of the
# policy itself pass outbound_allowed_networks=[] (the default).
LOCAL_PEERS = ["127.0.0.0/8"]
TABLES = (
    "deliveries",
    "notifications",
    "subscribers",
    "api_keys",
    "webhook_endpoints",
    "subscriber_addresses",
    "audit_log",
    "events",
    "rule_settings",
    "rule_runs",
    "templates",
    "scheduled_notifications",
    "topics",
    "fanouts",
    "schedules",
    "failed_requests",
    "retention_cursors",
)


# Files whose tests run on one xdist worker together, one after another: the browser tests
# share a machine's one Chromium budget (a page per test, each with a live stream) and time
# toasts and badges, so they do not run beside each other.
SERIAL_GROUPS = {"tests/browser/": "browser"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (the Makefile's) with two changes: SERIAL_GROUPS keep their files on
    one worker, and files go out in collection order rather than most-tests-first, so the few
    slow process-starting files (browser, e2e) start first and the many quick ones fill in."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            for prefix, group in SERIAL_GROUPS.items():
                if nodeid.startswith(prefix):
                    return group
            return super()._split_scope(nodeid)

    config.option.loadscopereorder = False
    return Scheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give Schemathesis's items (``test[GET /v1/x]``, one per operation) ids of their own.
    Pytest 9.2 builds an item's id from its function name and parametrize ids, which
    Schemathesis does not use, so all its items shared one id; pytest-xdist schedules by id
    and ran one operation of seventy (test_api_fuzz's last test catches that)."""
    ids = Counter(item.nodeid for item in items)
    for item in items:
        original = getattr(item, "originalname", item.name)
        if ids[item.nodeid] > 1 and item.name.startswith(f"{original}["):
            item._id = item.parent.id.child(original).with_params(item.name[len(original) + 1 : -1])


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"clarion_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for the test suite ({PG_ADMIN}): {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


# The tables TABLES reaches through foreign keys (what TRUNCATE ... CASCADE would empty too)
# and the edges between them, for a delete order that never trips a foreign key.
_REACHED = text(
    """
    WITH RECURSIVE reached(rel) AS (
        SELECT CAST(t AS regclass) FROM unnest(CAST(:tables AS text[])) AS t
        UNION
        SELECT c.conrelid FROM pg_constraint c JOIN reached r ON c.confrelid = r.rel
        WHERE c.contype = 'f'
    )
    SELECT CAST(r.rel AS regclass)::text, CAST(c.conrelid AS regclass)::text
    FROM reached r
    LEFT JOIN pg_constraint c ON c.confrelid = r.rel AND c.contype = 'f' AND c.conrelid <> r.rel
    """
)
# The sequences those tables own (serial and identity columns).
_OWNED_SEQUENCES = text(
    """
    SELECT CAST(d.objid AS regclass)::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
    WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i')
      AND d.classid = CAST('pg_class' AS regclass) AND d.refclassid = CAST('pg_class' AS regclass)
      AND d.refobjid = ANY(CAST(:tables AS regclass[]))
    """
)


@pytest.fixture(scope="session")
def clean_database(pg_url: str) -> Callable[[Connection], None]:
    """clean_database(conn) empties TABLES as ``TRUNCATE ... RESTART IDENTITY CASCADE`` would:
    every row of those tables and of the tables referencing them, sequences back at their
    start. DELETE does it in milliseconds where TRUNCATE, creating new files for every table
    and index, takes about a second: on a thousand tests that was most of the suite's time."""
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        children: dict[str, set[str]] = {}
        for table, child in conn.execute(_REACHED, {"tables": list(TABLES)}):
            children.setdefault(table, set())
            if child is not None:
                children[table].add(child)
        # Children first: each table comes after every table that references it.
        order = list(TopologicalSorter(children).static_order())
        sequences = conn.scalars(_OWNED_SEQUENCES, {"tables": order}).all()
    engine.dispose()
    statements = [text(f"DELETE FROM {table}") for table in order]
    restart = text(
        "SELECT setval(seqrelid, seqstart, false) FROM pg_sequence"
        " WHERE seqrelid = ANY(CAST(:sequences AS regclass[]))"
    )

    def clean(conn: Connection) -> None:
        for statement in statements:
            conn.execute(statement)
        conn.execute(restart, {"sequences": sequences})

    return clean


@pytest.fixture(scope="session")
def redis_client() -> redis_lib.Redis:
    client = redis_lib.Redis.from_url(f"{REDIS}/{BROKER_DB}")
    try:
        client.ping()
    except redis_lib.ConnectionError as exc:
        pytest.fail(f"Redis is required for the test suite ({REDIS}): {exc}")
    return client


def server_settings(pg_url: str, **overrides) -> Settings:
    values = {
        "database_url": pg_url,
        "broker_url": f"{REDIS}/{BROKER_DB}",
        "redis_url": f"{REDIS}/{PUBSUB_DB}",
        "secret_key": SECRET,
        "api_key_cache_seconds": 0,
        "outbound_allowed_networks": LOCAL_PEERS,
        **overrides,
    }
    return Settings(**values)


def process_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a real ``clarion`` process on the test database and Redis DBs;
    ``extra`` adds settings, e.g. ``CLARION_LOG_LEVEL="WARNING"``."""
    return {
        "CLARION_DATABASE_URL": database_url,
        "CLARION_BROKER_URL": f"{REDIS}/{BROKER_DB}",
        "CLARION_REDIS_URL": f"{REDIS}/{PUBSUB_DB}",
        "CLARION_SECRET_KEY": SECRET,
        "CLARION_OUTBOUND_ALLOWED_NETWORKS": json.dumps(LOCAL_PEERS),
        **extra,
    }


@pytest.fixture
def settings(pg_url: str, redis_client: redis_lib.Redis) -> Settings:
    return server_settings(pg_url)


@pytest.fixture
def runtime(settings: Settings, redis_client: redis_lib.Redis, clean_database) -> Iterator[Runtime]:
    rt = Runtime(settings)
    with rt.engine.begin() as conn:
        clean_database(conn)
    redis_client.flushdb()
    redis_lib.Redis.from_url(settings.redis_url).flushdb()
    yield rt
    rt.close()


@pytest.fixture
def make_runtime(runtime: Runtime, pg_url: str):
    """make_runtime(**overrides) -> another Runtime on the same (cleaned) test database."""
    made: list[Runtime] = []

    def make(**overrides) -> Runtime:
        made.append(Runtime(server_settings(pg_url, **overrides)))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as c:
        yield c


def make_key(runtime: Runtime, *scopes: str) -> str:
    with transaction(runtime.sessions) as session:
        _, secret = create_api_key(session=session, name="test", scopes=list(scopes))
    return secret


@pytest.fixture
def producer(runtime: Runtime) -> dict[str, str]:
    """Authorization headers of a producer API key (scope notify)."""
    return {"Authorization": f"Bearer {make_key(runtime, 'notify')}"}


@pytest.fixture
def user(runtime: Runtime):
    """user("alice") -> Authorization headers carrying alice's user token."""

    def headers(subscriber_id: str) -> dict[str, str]:
        token = issue_user_token(runtime.settings, subscriber_id)
        return {"Authorization": f"Bearer {token}"}

    return headers
