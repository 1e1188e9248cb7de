"""Channel throughput benchmark: email over SMTP and web push, each next to the raw
library as its baseline, and the cost of a retry cycle.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.channels                  # ~1.5 minutes
    .venv/bin/python -m bench.channels --emails 1000 --pushes 1000    # ~50 s

What it does, in one run on one machine (the peer servers run in their own processes,
``bench/channels_peers.py``, so they do not share this process's GIL):

1. **Email**, against a local aiosmtpd sink:
   (a) baseline: raw aiosmtplib on one SMTP session, one message at a time, the bytes of a
   message Clarion rendered (same size);
   (b) the deliver step in this process: ``clarion.core.deliver.deliver`` on N pending
   deliveries, 100 ids per call as the tasks get them (claim, render, send, record);
   (c) the real path: ``clarion worker --queues deliver.email --concurrency 2``; N
   deliveries dispatched by ``Runtime.deliver`` (tasks of 100); the time runs from the
   first task enqueued to the last row ``sent`` (its ``updated_at``).
   Targets: >= 0.6 x the baseline and >= 200 emails/s.
2. **Web push**, against a minimal local push service that answers 201:
   baselines: raw pywebpush encryption + VAPID signature per message (no POST), and raw
   ``pywebpush.webpush`` (encrypt + sign + POST on one keep-alive session); then the deliver
   step in this process and a real worker, as for email. Target: >= 0.7 x the encrypt+sign
   baseline.
3. **Retry cycle**: N email deliveries whose first attempt gets ``451`` (the SMTP peer
   answers 451 to the first DATA of each Message-ID, 250 to the next), with
   ``CLARION_RETRY_BACKOFF_SECONDS`` tiny, through the same worker setup as 1(c), whose
   first-time success is the comparison: extra worker CPU per retry, extra wall time, and
   the database work (attempt rows, row updates, transactions, WAL) per delivery.

Setup is not measured: subscribers are inserted with SQL, and the deliveries come from
Clarion's own ``create`` step (``send.prepare`` + ``create.persist``, 1,000 recipients per
request) run in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/channels.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import _common as common
from bench import channels_profile
from bench.channels_peers import FAIL_FIRST, Counters

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

    def deliver(self, channel: str, delivery_ids: list[uuid.UUID], countdown: float = 0) -> None:
        self.retries += len(delivery_ids)

    def dead_lettered(self, letter: dict) -> None:
        self.dead += 1


class Timed:
    """A channel whose render and send are timed (CPU of this process, all threads), or,
    with ``no_send``, skipped: its addressing (target loading) stays as it is."""

    def __init__(self, real, no_send: bool) -> None:
        self.real, self.key, self.no_send = real, real.key, no_send
        self.render_s = self.send_s = 0.0

    def load_targets(self, *, session, ids: set[str]) -> dict:
        return self.real.load_targets(session=session, ids=ids)

    def deactivate(self, *, session, target_id: str, reason: str) -> None:
        self.real.deactivate(session=session, target_id=target_id, reason=reason)

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


def wait_port(port: int, procs: common.Processes, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


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

    from clarion.channels.webpush import b64url_encode
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
    from clarion.core import send
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
                messages=[send.prepare(request)],
                settings=runtime.settings,
                channels=runtime.channels,
            )
        ids += created.to_dispatch.get(channel, [])
    if len(ids) != len(recipients):
        raise RuntimeError(f"{len(ids)} pending {channel} deliveries for {len(recipients)}")
    return sorted(ids)


def sample_message(runtime, delivery_id: uuid.UUID):
    """The channel Message of one pending delivery, built as the deliver step builds it."""
    from clarion.core import deliver as deliver_core
    from clarion.db import deliveries
    from clarion.db.models import Delivery

    with runtime.sessions() as session:
        row = session.get(Delivery, delivery_id)
        context = deliveries.contexts(session=session, notification_ids={row.notification_id})
        claimed = deliveries.Claimed(row.id, row.notification_id, row.target, 1)
        return deliver_core._message(claimed, *context[row.notification_id]), row.target


# --- the run -------------------------------------------------------------------------------


class Bench:
    def __init__(self, procs: common.Processes, env: dict, args: argparse.Namespace) -> None:
        self.procs, self.env, self.args = procs, env, args
        self.db_url = common.pg_url(DATABASE)
        self.db = Db(self.db_url)
        self.runtime = None
        self.clarion = str(common.BIN / "clarion")
        self.ok = True  # nothing lost, nothing sent twice
        self.profiles: list[Path] = []

    # -- helpers ------------------------------------------------------------------------
    def configure(self, values: dict[str, str]) -> None:
        """Settings for this process and the workers; a new Runtime that knows them."""
        from clarion.runtime import Runtime
        from clarion.settings import Settings

        os.environ.update(values)
        self.env.update(values)
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = Runtime(Settings())

    def start_peer(self, kind: str) -> tuple[int, Counters, subprocess.Popen]:
        port = common.free_port()
        counters = Counters(self.procs.logdir / f"{kind}.counters", create=True)
        argv = [sys.executable, "-m", "bench.channels_peers", kind, str(port), str(counters.path)]
        peer = self.procs.start(f"{kind}-peer", argv, self.env)
        wait_port(port, self.procs)
        return port, counters, peer

    def vacuum(self) -> None:
        """What autovacuum would do after the bulk setup, done now rather than mid-phase."""
        self.runtime.engine.dispose()
        for table in ("subscribers", "push_subscriptions", "notifications", "deliveries"):
            self.db.query(f"VACUUM ANALYZE {table}")

    def profile_start(self, name: str, pid: int) -> subprocess.Popen | None:
        """py-spy on a process (and its prefork children) while a phase runs."""
        if not self.args.profile:
            return None
        out = Path(self.args.profile) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(common.BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "200"]
        argv += ["--format", "raw", "--nonblocking", "--output", str(out)]
        if name.startswith("worker"):
            argv.append("--subprocesses")
        proc = self.procs.start(f"py-spy-{name}", argv, self.env)
        time.sleep(1.0)  # attached
        self.profiles.append(out)
        return proc

    def profile_stop(self, proc: subprocess.Popen | None) -> None:
        if proc is None:
            return
        os.killpg(proc.pid, signal.SIGINT)  # py-spy writes its output on Ctrl-C
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        self.procs.stop(proc)

    def wait_done(
        self, ids: list[uuid.UUID], counters: Counters, accepted: int, timeout: float
    ) -> float:
        """Until the peer accepted ``accepted`` in all and every row is ``sent``; returns
        the time of the last row's ``updated_at`` (when its outcome was recorded)."""
        last, changed = counters.accepted, time.monotonic()
        deadline = time.monotonic() + timeout
        while counters.accepted < accepted:
            self.procs.check_alive()
            now = time.monotonic()
            if counters.accepted != last:
                last, changed = counters.accepted, now
            elif now - changed > self.args.stall or now > deadline:
                raise TimeoutError(f"stalled: the peer accepted {last} of {accepted}")
            time.sleep(0.02)
        while True:
            sent, end = self.db.query(
                "SELECT count(*), extract(epoch FROM max(updated_at)) FROM deliveries "
                "WHERE id = ANY(%s) AND status = 'sent'",
                [ids],
            )[0]
            if sent == len(ids):
                return float(end)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sent} of {len(ids)} rows sent")
            time.sleep(0.02)

    def check(self, label: str, counters: Counters, before: int, count: int) -> None:
        got = counters.accepted - before
        if got != count:
            self.ok = False
            print(f"  !! {label}: the peer accepted {got} messages for {count} deliveries")

    def statuses(self, ids: list[uuid.UUID]) -> dict[str, int]:
        return dict(
            self.db.query(
                "SELECT status, count(*) FROM deliveries WHERE id = ANY(%s) GROUP BY 1", [ids]
            )
        )

    # -- the deliver step, in this process or in a worker ----------------------------------
    def inprocess(
        self,
        channel: str,
        warm: list,
        ids: list,
        counters: Counters,
        groups: dict,
        no_send: bool = False,
    ) -> Figure:
        """The deliver step in this process, 100 ids per call as a task gets them. With
        ``no_send``, the channel renders and sends nothing: what is left is the state
        machine and its database work. Render and send are timed in place (:class:`Timed`)."""
        from clarion.core.deliver import deliver

        recorder = Recorder()
        channels = TimedChannels(self.runtime.channels, no_send)

        def run(batch_ids: list) -> None:
            for start in range(0, len(batch_ids), 100):
                deliver(
                    batch_ids[start : start + 100],
                    channel=channel,
                    sessions=self.runtime.sessions,
                    settings=self.runtime.settings,
                    channels=channels,
                    scheduler=recorder,
                )

        run(warm)  # the SMTP session or HTTP connection, the pool, the templates
        timed = channels.get(channel)
        timed.render_s = timed.send_s = 0.0
        name = f"inprocess-{channel}" + ("-nosend" if no_send else "")
        profiler = self.profile_start(name, os.getpid())
        before, accepted = common.cpu_snapshot(groups), counters.accepted
        started, cpu = time.perf_counter(), time.process_time()
        run(ids)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = common.cpu_snapshot(groups)
        self.profile_stop(profiler)
        self.check(f"in-process {channel}", counters, accepted, 0 if no_send else len(ids))
        states = self.statuses(ids)
        if states != {"sent": len(ids)} or recorder.retries or recorder.dead:
            self.ok = False
            print(f"  !! in-process {channel}: {states}, retries {recorder.retries}")
        self.runtime.engine.dispose()  # its backends exit, so their statistics are flushed
        label = "deliver step, no render, no send" if no_send else "deliver step in-process"
        return Figure(
            f"{channel}: {label}",
            len(ids),
            seconds,
            cpu=common.cpu_report(before, after, seconds),
            cpu_ms=cpu / len(ids) * 1000,
            parts={
                "render": timed.render_s / len(ids) * 1000,
                "send": timed.send_s / len(ids) * 1000,
            },
        )

    def worker(
        self,
        channel: str,
        warm: list,
        ids: list,
        counters: Counters,
        groups: dict,
        label: str,
        fail_first: bool = False,
    ) -> Figure:
        self.runtime.engine.dispose()  # no idle connection of ours left in the counts
        # Both worker phases start right after a checkpoint, so each pays the same full-page
        # images in the WAL for the pages it touches first.
        self.db.query("CHECKPOINT")
        db0 = self.db.counters()
        argv = [self.clarion, "worker", "--queues", f"deliver.{channel}", "--concurrency"]
        argv += [str(self.args.concurrency), "--pool", "prefork", "--hostname", f"{label}@%h"]
        worker = self.procs.start(label, argv, self.env)
        groups = {**groups, "worker": worker.pid}
        # Warm-up: the worker starts, each child opens its session and its pool.
        accepted = counters.accepted
        self.runtime.deliver(channel, warm)
        self.wait_done(warm, counters, accepted + len(warm), timeout=90)
        if fail_first:
            counters.set_mode(FAIL_FIRST)
        profiler = self.profile_start(label, worker.pid)
        accepted, deferred = counters.accepted, counters.deferred
        before = common.cpu_snapshot(groups)
        started = time.time()
        self.runtime.deliver(channel, ids)
        end = self.wait_done(ids, counters, accepted + len(ids), timeout=300)
        after, window = common.cpu_snapshot(groups), time.time() - started
        self.profile_stop(profiler)
        counters.set_mode(0)
        self.check(label, counters, accepted, len(ids))
        self.procs.stop(worker)
        db1 = self.db.counters()
        seconds = end - started
        cpu_s = {k: after[k] - before[k] for k in after}
        figure = Figure(
            f"{channel}: clarion worker --concurrency {self.args.concurrency}",
            len(ids),
            seconds,
            cpu=common.cpu_report(before, after, window),
            cpu_s=cpu_s,
            cpu_ms=cpu_s["worker"] / len(ids) * 1000,
            db={k: db1[k] - db0[k] for k in db0},
        )
        figure.deferred = counters.deferred - deferred
        return figure

    # -- email ------------------------------------------------------------------------------
    def email_baseline(self, port: int, raw: bytes, sends: int, groups: dict) -> Figure:
        """Raw aiosmtplib, one session, one message at a time; the default asyncio loop, as
        the channel's own background loop."""
        import aiosmtplib

        recipient = ["e-0@example.com"]

        async def sendmail(client, n: int) -> None:
            for _ in range(n):
                await client.sendmail(SENDER, recipient, raw)

        async def main() -> tuple[float, float, dict, dict]:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
            await client.connect()
            await sendmail(client, min(200, sends))  # warm-up
            before = common.cpu_snapshot(groups)
            started, cpu = time.perf_counter(), time.process_time()
            await sendmail(client, sends)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            after = common.cpu_snapshot(groups)
            await client.quit()
            return seconds, cpu, before, after

        loop = asyncio.new_event_loop()
        try:
            seconds, cpu, before, after = loop.run_until_complete(main())
        finally:
            loop.close()
        return Figure(
            "email: raw aiosmtplib, 1 session",
            sends,
            seconds,
            cpu=common.cpu_report(before, after, seconds),
            cpu_ms=cpu / sends * 1000,
        )

    def email(self) -> dict[str, Figure]:
        import aiosmtplib.email

        args = self.args
        port, counters, peer = self.start_peer("smtp")
        self.configure({"CLARION_SMTP_HOST": "127.0.0.1", "CLARION_SMTP_PORT": str(port)})
        groups = {"smtp peer": peer.pid}
        n, warm_n = args.emails, args.warmup
        started = time.perf_counter()
        recipients = add_email_subscribers(self.db_url, n)
        sets = {
            name: create_deliveries(self.runtime, "email", recipients[:count])
            for name, count in (
                ("warm-in", warm_n),
                ("in", n),
                ("no-send", n),
                ("warm-worker", warm_n),
                ("worker", n),
                ("warm-retry", warm_n),
                ("retry", n),
            )
        }
        self.vacuum()
        message, _ = sample_message(self.runtime, sets["in"][0])
        channel = self.runtime.channels.get("email")
        raw = aiosmtplib.email.flatten_message(channel.render(message, {}))
        print(
            f"\nemail setup: {n:,} subscribers, {sum(map(len, sets.values())):,} pending "
            f"deliveries in {time.perf_counter() - started:.1f} s; message {len(raw):,} "
            f"bytes (multipart text + HTML, List-Unsubscribe)"
        )
        figures: dict[str, Figure] = {}
        figures["baseline"] = self.email_baseline(port, raw, args.baseline_sends, groups)
        self.report(figures["baseline"])
        figures["in"] = self.inprocess("email", sets["warm-in"], sets["in"], counters, groups)
        self.report(figures["in"], figures["baseline"], EMAIL_RATIO, EMAIL_RATE)
        figures["no-send"] = self.inprocess(
            "email", [], sets["no-send"], counters, groups, no_send=True
        )
        self.report(figures["no-send"], figures["baseline"])
        payload = channel.render(message, {})
        self.cost_model(
            figures,
            {
                "render": cpu_ms(lambda: channel.render(message, {})),
                "send (the channel's, the same message each time)": cpu_ms(
                    lambda: channel.send(payload, {})
                ),
                "  of which flatten (email.generator, in aiosmtplib's send_message)": cpu_ms(
                    lambda: aiosmtplib.email.flatten_message(payload)
                ),
                "  of which the SMTP transaction (the baseline: raw aiosmtplib send)": figures[
                    "baseline"
                ].cpu_ms,
            },
        )
        figures["worker"] = self.worker(
            "email", sets["warm-worker"], sets["worker"], counters, groups, "worker-email"
        )
        self.report(figures["worker"], figures["baseline"], EMAIL_RATIO, EMAIL_RATE)
        retry = self.worker(
            "email",
            sets["warm-retry"],
            sets["retry"],
            counters,
            groups,
            "worker-retry",
            fail_first=True,
        )
        retry.label = "email: worker, first attempt 451"
        figures["retry"] = retry
        self.report_retry(figures["worker"], retry, args.warmup)
        return figures

    # -- web push ---------------------------------------------------------------------------
    def push_baselines(
        self, payload: dict, subs: list[dict], count: int, groups: dict
    ) -> list[Figure]:
        import requests
        from py_vapid import Vapid02
        from pywebpush import WebPusher, webpush

        from clarion.channels.webpush import load_private_key, origin

        vapid = Vapid02(load_private_key(self.vapid_private), conf={"no-strict": True})
        audience = origin(subs[0]["endpoint"])
        data, ttl = payload["data"], payload["ttl"]

        def claims() -> dict:
            return {"sub": SUBJECT, "aud": audience, "exp": int(time.time()) + 12 * 3600}

        def encrypt_sign(n: int) -> None:
            for i in range(n):
                vapid.sign(claims())
                WebPusher(subs[i % len(subs)]).encode(data)

        session = requests.Session()

        def full(n: int) -> None:
            for i in range(n):
                webpush(
                    subs[i % len(subs)],
                    data,
                    vapid_private_key=vapid,
                    vapid_claims=claims(),
                    ttl=ttl,
                    headers=dict(payload["headers"]),
                    requests_session=session,
                    timeout=10,
                )

        figures = []
        for label, run in (
            ("push: raw pywebpush encrypt + VAPID sign", encrypt_sign),
            ("push: raw pywebpush encrypt + sign + POST", full),
        ):
            run(min(100, count))  # warm-up
            before = common.cpu_snapshot(groups)
            started, cpu = time.perf_counter(), time.process_time()
            run(count)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            after = common.cpu_snapshot(groups)
            figures.append(
                Figure(
                    label,
                    count,
                    seconds,
                    cpu=common.cpu_report(before, after, seconds),
                    cpu_ms=cpu / count * 1000,
                )
            )
        session.close()
        self.push_costs = {
            "sign": cpu_ms(lambda: vapid.sign(claims())),
            "encrypt": cpu_ms(lambda: WebPusher(subs[0]).encode(data)),
        }
        return figures

    def push(self) -> dict[str, Figure]:
        from clarion.channels.webpush import generate_vapid_keys

        args = self.args
        port, counters, peer = self.start_peer("push")
        self.vapid_private, public = generate_vapid_keys()
        self.configure(
            {
                "CLARION_VAPID_PRIVATE_KEY": self.vapid_private,
                "CLARION_VAPID_PUBLIC_KEY": public,
                "CLARION_VAPID_SUBJECT": SUBJECT,
                "CLARION_PUSH_ALLOW_HTTP_ENDPOINTS": "true",
            }
        )
        groups = {"push peer": peer.pid}
        n, warm_n = args.pushes, args.warmup
        started = time.perf_counter()
        subs = add_push_subscribers(self.db_url, n, f"http://127.0.0.1:{port}")
        recipients = [f"p-{i}" for i in range(n)]
        sets = {
            name: create_deliveries(self.runtime, "push", recipients[:count])
            for name, count in (
                ("warm-in", warm_n),
                ("in", n),
                ("no-send", n),
                ("warm-worker", warm_n),
                ("worker", n),
            )
        }
        self.vacuum()
        message, target_id = sample_message(self.runtime, sets["in"][0])
        channel = self.runtime.channels.get("push")
        with self.runtime.sessions() as session:
            target = channel.load_targets(session=session, ids={target_id})[target_id]
        payload = channel.render(message, target)
        print(
            f"\nweb push setup: {n:,} subscribers with one subscription each, "
            f"{sum(map(len, sets.values())):,} pending deliveries in "
            f"{time.perf_counter() - started:.1f} s; payload {len(payload['data'])} bytes of "
            f"JSON before encryption"
        )
        figures: dict[str, Figure] = {}
        accepted = counters.accepted
        figures["baseline"], figures["raw-post"] = self.push_baselines(
            payload, subs, args.baseline_pushes, groups
        )
        posts = args.baseline_pushes + min(100, args.baseline_pushes)  # with the warm-up
        self.check("raw pywebpush POST", counters, accepted, posts)
        self.report(figures["baseline"])
        self.report(figures["raw-post"], figures["baseline"])
        figures["in"] = self.inprocess("push", sets["warm-in"], sets["in"], counters, groups)
        self.report(figures["in"], figures["baseline"], PUSH_RATIO)
        figures["no-send"] = self.inprocess(
            "push", [], sets["no-send"], counters, groups, no_send=True
        )
        self.report(figures["no-send"], figures["baseline"])
        payload = channel.render(message, target)
        self.cost_model(
            figures,
            {
                "render": cpu_ms(lambda: channel.render(message, target)),
                "send (the channel's: encrypt + POST; its VAPID token is reused)": cpu_ms(
                    lambda: channel.send(payload, target)
                ),
                "  of which encrypt (pywebpush WebPusher.encode)": self.push_costs["encrypt"],
                "  of which POST (raw webpush() - raw encrypt + sign)": figures["raw-post"].cpu_ms
                - figures["baseline"].cpu_ms,
                "VAPID signature (raw, per message)": self.push_costs["sign"],
            },
        )
        figures["worker"] = self.worker(
            "push", sets["warm-worker"], sets["worker"], counters, groups, "worker-push"
        )
        self.report(figures["worker"], figures["baseline"], PUSH_RATIO)
        return figures

    @staticmethod
    def cost_model(figures: dict[str, Figure], alone: dict[str, float]) -> None:
        """CPU per message in this process: render and send as timed in place, the rest
        (state machine and database); then parts measured alone, for comparison."""
        whole, parts = figures["in"].cpu_ms, figures["in"].parts
        rest = whole - parts["render"] - parts["send"]
        print(
            f"  where the CPU goes, ms per message in this process ({whole:.2f} in all), "
            f"timed in place:\n"
            f"    {parts['render']:6.3f}  render\n"
            f"    {parts['send']:6.3f}  send\n"
            f"    {rest:6.3f}  the rest: claim, load, record (state machine + database)\n"
            f"  measured alone (each part runs faster alone than interleaved):"
        )
        alone = {"deliver step, no render, no send": figures["no-send"].cpu_ms, **alone}
        for name, value in alone.items():
            print(f"    {value:6.3f}  {name}")

    # -- printing ---------------------------------------------------------------------------
    @staticmethod
    def met(figure: Figure, base: Figure | None, ratio: float | None, rate: float | None):
        if base is None or ratio is None:
            return None
        return figure.rate >= ratio * base.rate and (rate is None or figure.rate >= rate)

    @staticmethod
    def verdict(figure: Figure, base: Figure, ratio: float, rate: float | None) -> str:
        """'>= 0.6 x: NOT MET (0.21 x, 2.9 x short); >= 200/s: met' and the like."""
        got = figure.rate / base.rate
        parts = [
            f">= {ratio} x: met"
            if got >= ratio
            else f">= {ratio} x: NOT MET ({got:.2f} x, {ratio / got:.1f} x short)"
        ]
        if rate is not None:
            parts.append(
                f">= {rate:.0f}/s: met"
                if figure.rate >= rate
                else f">= {rate:.0f}/s: NOT MET ({rate - figure.rate:,.0f}/s short)"
            )
        return "; ".join(parts)

    def report(
        self,
        figure: Figure,
        base: Figure | None = None,
        ratio: float | None = None,
        rate: float | None = None,
    ) -> None:
        line = f"\n{figure.label}: {figure.count:,} in {figure.seconds:.2f} s"
        line += f" = {figure.rate:,.0f}/s"
        if figure.cpu_ms is not None:
            line += f", {figure.cpu_ms:.2f} ms CPU each"
        if base is not None:
            line += f", {figure.rate / base.rate:.2f} x {base.label.split(': ', 1)[1]}"
        print(line)
        if ratio is not None:
            print(f"  target {self.verdict(figure, base, ratio, rate)}")
        print(f"  CPU, % of one core (2 cores = 200%): {figure.cpu}")

    def report_retry(self, ok: Figure, retry: Figure, warm: int) -> None:
        n = retry.count
        print(
            f"\n{retry.label}: {n:,} deliveries, {retry.deferred:,} first attempts deferred "
            f"(451), all sent in {retry.seconds:.2f} s = {retry.rate:,.0f}/s "
            f"(first-time success: {ok.seconds:.2f} s = {ok.rate:,.0f}/s)"
        )
        print(f"  CPU, % of one core (2 cores = 200%): {retry.cpu}")
        for name in ("worker", "postgres", "redis", "smtp peer"):
            extra = (retry.cpu_s[name] - ok.cpu_s[name]) / n * 1000
            print(
                f"  {name} CPU: {retry.cpu_s[name] / n * 1000:.2f} ms per delivery with a "
                f"retry, {ok.cpu_s[name] / n * 1000:.2f} ms without: +{extra:.2f} ms per retry"
            )
        print(f"  database work per delivery ({warm} warm-up deliveries in both taken out):")
        for key in ok.db:
            first = ok.db[key] / (n + warm)
            with_retry = (retry.db[key] - warm * first) / n
            print(
                f"    {key}: {with_retry:,.2f} with a retry, {first:,.2f} without "
                f"(+{with_retry - first:,.2f})"
            )

    def table(self, email: dict[str, Figure], push: dict[str, Figure]) -> None:
        rows = []
        if email:
            rows += [
                (email["baseline"], None, None, None),
                (email["in"], email["baseline"], EMAIL_RATIO, EMAIL_RATE),
                (email["no-send"], email["baseline"], None, None),
                (email["worker"], email["baseline"], EMAIL_RATIO, EMAIL_RATE),
                (email["retry"], email["baseline"], None, None),
            ]
        if push:
            rows += [
                (push["baseline"], None, None, None),
                (push["raw-post"], push["baseline"], None, None),
                (push["in"], push["baseline"], PUSH_RATIO, None),
                (push["no-send"], push["baseline"], None, None),
                (push["worker"], push["baseline"], PUSH_RATIO, None),
            ]
        print("\n| figure | per second | CPU ms per message | ratio to baseline | target |")
        print("| --- | --- | --- | --- | --- |")
        for figure, base, ratio, rate in rows:
            shown = f"{figure.rate / base.rate:.2f} x" if base else "(baseline)"
            target = ""
            if ratio is not None:
                target = self.verdict(figure, base, ratio, rate)
            cpu = f"{figure.cpu_ms:.2f}" if figure.cpu_ms is not None else ""
            print(f"| {figure.label} | {figure.rate:,.0f} | {cpu} | {shown} | {target} |")
        if email:
            ok, retry = email["worker"], email["retry"]
            n = retry.count
            extra = (retry.cpu_s["worker"] - ok.cpu_s["worker"]) / n * 1000
            print(
                f"\nretry cycle: +{extra:.2f} ms of worker CPU per retry "
                f"({ok.cpu_s['worker'] / n * 1000:.2f} ms per delivery sent first time), "
                f"+{(retry.seconds - ok.seconds) / n * 1000:.2f} ms of wall time per delivery"
            )
        print(
            "\nCPU ms per message: the client process for the raw baselines, this process for "
            "the in-process rows, the whole worker (its parent and children) for worker rows"
        )


def run(args: argparse.Namespace) -> int:
    os.environ.update(
        {
            "CLARION_SMTP_FROM": SENDER,
            # Retries come back at once: the retry phase measures their cost, not the wait.
            "CLARION_RETRY_BACKOFF_SECONDS": str(args.backoff),
        }
    )
    env = common.fresh_run(DATABASE, args.log_level)
    with common.Processes() as procs:
        print(f"process logs: {procs.logdir}")
        bench = Bench(procs, env, args)
        email: dict[str, Figure] = {}
        push: dict[str, Figure] = {}
        try:
            if "email" in args.channels:
                email = bench.email()
            if "push" in args.channels:
                push = bench.push()
        finally:
            if bench.runtime is not None:
                bench.runtime.close()
            bench.db.close()
        bench.table(email, push)
    for path in bench.profiles:
        print(f"\nprofile {path} (py-spy, collapsed stacks):")
        for share, name in channels_profile.summary(path):
            print(f"  {share:5.1f}%  {name}")
    if not bench.ok:
        print("\n!! messages lost or sent twice: see above")
        return 1
    targets = [
        Bench.met(figures[k], figures["baseline"], ratio, rate)
        for figures, ratio, rate in ((email, EMAIL_RATIO, EMAIL_RATE), (push, PUSH_RATIO, None))
        for k in ("in", "worker")
        if figures
    ]
    return 0 if all(targets) or not args.strict else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--channels", type=lambda v: v.split(","), default=["email", "push"],
        help="comma-separated: email,push (default both)")  # fmt: skip
    add("--emails", type=int, default=3000, help="deliveries per email phase (N)")
    add("--pushes", type=int, default=3000, help="deliveries per web push phase")
    add("--baseline-sends", type=int, default=3000, help="raw aiosmtplib sends")
    add("--baseline-pushes", type=int, default=2000, help="raw pywebpush messages, each way")
    add("--warmup", type=int, default=400, help="unmeasured deliveries before each phase")
    add("--concurrency", type=int, default=2, help="the worker's prefork processes")
    add("--backoff", type=float, default=0.001, help="CLARION_RETRY_BACKOFF_SECONDS")
    add("--log-level", default="WARNING", help="CLARION_LOG_LEVEL of the workers")
    add("--stall", type=float, default=20, help="give up after s without progress")
    add("--profile", metavar="DIR", help="py-spy each measured phase into DIR (slower)")
    add("--strict", action="store_true", help="exit 1 when a target is not met")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
