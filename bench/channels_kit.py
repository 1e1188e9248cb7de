"""Plumbing of the channel benchmark (``bench/channels.py``): figures, timing wrappers,
the database probe, and the setup that is not measured."""

import datetime as dt
import os
import time
import uuid
from dataclasses import dataclass, field

import psycopg

DATABASE = "clarion_bench_channels"
SENDER = "noreply@bench.clarion.test"
SUBJECT = "mailto:ops@bench.clarion.test"
EMAIL_RATIO, EMAIL_RATE, PUSH_RATIO = 0.6, 200.0, 0.7
REQUEST = 1000  # recipients per create request (the API's maximum)
TITLE = "Your link expires tomorrow"
BODY = (
    "go.example/abc stops working on 1 December. Renew it from your dashboard, or export "
    "the click statistics before then; after that date the link answers 404."
)
URL = "https://app.example/links/abc"


@dataclass
class Figure:
    """One measured phase."""

    label: str
    count: int
    seconds: float
    cpu: str = ""
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per group
    db: dict[str, float] = field(default_factory=dict)  # database work (worker phases)
    deferred: int = 0  # first attempts the peer answered 451
    cpu_ms: float | None = None  # CPU per message of the process(es) under test
    parts: dict[str, float] = field(default_factory=dict)  # in-process: render, send (ms)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


class Recorder:
    """The scheduler of the in-process deliver step: counts what it would dispatch."""

    def __init__(self) -> None:
        self.retries = self.dead = 0

    def deliver(
        self, channel: str, delivery_ids: list[uuid.UUID], countdown: float = 0, lane: str = ""
    ) -> None:
        self.retries += len(delivery_ids)

    def dead_lettered(self, letter: dict) -> None:
        self.dead += 1


class Timed:
    """A channel whose render and send are timed (CPU of this process, all threads), or,
    with ``no_send``, skipped: its addressing (target loading) stays as it is."""

    def __init__(self, real, no_send: bool) -> None:
        self.real, self.key, self.no_send = real, real.key, no_send
        self.render_s = self.send_s = 0.0

    def __getattr__(self, name: str):
        # Everything but render and send is the real channel's (addressing, send_timeout).
        return getattr(self.real, name)

    def render(self, message, target):
        if self.no_send:
            return None
        started = time.process_time()
        try:
            return self.real.render(message, target)
        finally:
            self.render_s += time.process_time() - started

    def send(self, payload, target) -> str:
        if self.no_send:
            return "no-send"
        started = time.process_time()
        try:
            return self.real.send(payload, target)
        finally:
            self.send_s += time.process_time() - started


class TimedChannels:
    """What ``deliver`` gets as ``channels``: each real channel behind :class:`Timed`."""

    def __init__(self, channels, no_send: bool = False) -> None:
        self.channels, self.no_send = channels, no_send
        self.built: dict[str, Timed | str] = {}

    def get(self, key: str):
        if key not in self.built:
            real = self.channels.get(key)
            self.built[key] = real if isinstance(real, str) else Timed(real, self.no_send)
        return self.built[key]


class Db:
    """The harness's own connection (autocommit), counting its statements: each is one
    transaction in ``pg_stat_database.xact_commit``, taken out of the workers' figures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statements = 0
        self.conn: psycopg.Connection | None = None

    def query(self, sql: str, params=None) -> list[tuple]:
        if self.conn is None:
            self.conn = psycopg.connect(self.url, autocommit=True)
        self.statements += 1
        cursor = self.conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def counters(self) -> dict[str, float]:
        """Cumulative database work so far, once every other backend has gone (a backend
        flushes its statistics when it exits; an idle one only every 10 s)."""
        self.close()
        flushed = self.statements  # every statement of the connection just closed
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            others = self.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )[0][0]
            if not others:
                break
            time.sleep(0.05)
        else:
            print("  !! other connections to the benchmark database: counts may be off")
        tables = {
            name: (ins, upd, hot)
            for name, ins, upd, hot in self.query(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname IN ('deliveries', 'delivery_attempts')"
            )
        }
        xact = self.query(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        )[0][0]
        wal = self.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0]
        return {
            "attempt rows": tables["delivery_attempts"][0],
            "delivery row updates": tables["deliveries"][1],
            "of which HOT": tables["deliveries"][2],
            "transactions": xact - flushed,  # the harness's own taken out
            "WAL bytes": float(wal),
        }


def cpu_ms(fn, repeat: int = 300) -> float:
    """CPU milliseconds of one call, this process (after 20 unmeasured calls)."""
    for _ in range(20):
        fn()
    cpu = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - cpu) / repeat * 1000


# --- setup (not measured) ------------------------------------------------------------------


def add_email_subscribers(db_url: str, count: int) -> list[str]:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO subscribers (id, email, name, data, seq, created_at, updated_at) "
            "SELECT 'e-' || g, 'e-' || g || '@example.com', 'Subscriber ' || g, '{}', 0, "
            "now(), now() FROM generate_series(0, %s) g",
            [count - 1],
        )
    return [f"e-{i}" for i in range(count)]


def add_push_subscribers(db_url: str, count: int, origin: str) -> list[dict]:
    """Subscribers with one push subscription each: a real P-256 public key and a 16-byte
    auth secret, since pywebpush encrypts to them. Returns their ``subscription_info``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from clarion.channels.push.sender import b64url_encode
    from clarion.ids import new_id

    now = dt.datetime.now(dt.UTC)
    subs = []
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO subscribers (id, data, seq, created_at, updated_at) "
            "SELECT 'p-' || g, '{}', 0, now(), now() FROM generate_series(0, %s) g",
            [count - 1],
        )
        with conn.cursor().copy(
            "COPY push_subscriptions (id, subscriber_id, endpoint, p256dh, auth, user_agent, "
            "created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(count):
                point = (
                    ec.generate_private_key(ec.SECP256R1())
                    .public_key()
                    .public_bytes(
                        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                    )
                )
                info = {
                    "endpoint": f"{origin}/push/{uuid.uuid4().hex}",
                    "keys": {"p256dh": b64url_encode(point), "auth": b64url_encode(os.urandom(16))},
                }
                subs.append(info)
                copy.write_row(
                    (
                        new_id(),
                        f"p-{i}",
                        info["endpoint"],
                        *info["keys"].values(),
                        "bench",
                        now,
                        now,
                    )
                )
    return subs


def create_deliveries(runtime, channel: str, recipients: list[str]) -> list[uuid.UUID]:
    """Pending deliveries on ``channel``, one per recipient, from Clarion's create step."""
    from clarion.core import enqueue
    from clarion.core.create import persist
    from clarion.core.schemas import NotificationCreate
    from clarion.db.session import transaction

    ids: list[uuid.UUID] = []
    for start in range(0, len(recipients), REQUEST):
        request = NotificationCreate(
            recipients=recipients[start : start + REQUEST],
            category="bench",
            type="load",
            title=TITLE,
            body=BODY,
            url=URL,
            channels=[channel],
        )
        with transaction(runtime.sessions) as session:
            created = persist(
                session=session,
                messages=[enqueue.prepare(request)],
                settings=runtime.settings,
                channels=runtime.channels,
            )
        # Keyed by (channel, lane): one request, one lane.
        ids += [
            i for (key, _), batch in created.to_dispatch.items() if key == channel for i in batch
        ]
    if len(ids) != len(recipients):
        raise RuntimeError(f"{len(ids)} pending {channel} deliveries for {len(recipients)}")
    return sorted(ids)


def sample_message(runtime, delivery_id: uuid.UUID):
    """The channel Message of one pending delivery, built as the deliver step builds it."""
    from clarion.core import deliver_jobs
    from clarion.db import deliveries
    from clarion.db.models import Delivery

    with runtime.sessions() as session:
        row = session.get(Delivery, delivery_id)
        context = deliveries.contexts(session=session, notification_ids={row.notification_id})
        claimed = deliveries.Claimed(row.id, row.notification_id, row.target, 1)
        return deliver_jobs.message_of(claimed, *context[row.notification_id]), row.target
