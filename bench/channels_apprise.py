"""Chat and sms throughput next to raw Apprise: the same json:// notifier, the same receiver.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.channels_apprise              # ~1 minute
    .venv/bin/python -m bench.channels_apprise --sends 300

For each channel, against one local HTTP receiver (its own process, answering 200):

1. **baseline**: raw Apprise, one plugin instantiated once, ``notify()`` N times, one at a
   time (what a script calling Apprise directly would do);
2. **deliver step in-process**: ``clarion.core.deliver.deliver`` on N pending deliveries,
   100 ids per call as the tasks get them (claim, load and unseal the target, render,
   instantiate the Apprise plugin, check the outbound policy, ``notify()``, record).

Target: the deliver step at >= 0.6 x the baseline. Setup (subscribers, their sealed
addresses, the pending deliveries from Clarion's own create step) is not measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from bench.channels_kit import BODY, TITLE, Recorder, create_deliveries

DATABASE = "clarion_bench_apprise"
RATIO = 0.6
PHONE = "+33612345678"


def _serve(port, count) -> None:  # the receiver process
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            with count.get_lock():
                count.value += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def add_addresses(runtime, channel: str, value: str, count: int, prefix: str) -> list[str]:
    from clarion.channels import addresses as sealing
    from clarion.db import addresses, subscribers
    from clarion.db.session import transaction
    from clarion.ids import utcnow

    ids = [f"{prefix}-{i:06d}" for i in range(count)]
    sealed = sealing.seal(runtime.settings, value)  # Fernet: each seal differs; one is fine
    with transaction(runtime.sessions) as session:
        subscribers.ensure(session=session, ids=ids, now=utcnow())
        for i in ids:
            addresses.put(
                session=session,
                subscriber_id=i,
                channel=channel,
                sealed=sealed,
                display="bench",
                now=utcnow(),
            )
    return ids


def baseline(url: str, sends: int) -> tuple[float, float]:
    """Sends/s and CPU ms per send of this process."""
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    plugin.notify(body=BODY, title=TITLE)  # warm: the connection setup, the imports
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(sends):
        if not plugin.notify(body=BODY, title=TITLE):
            raise RuntimeError("raw Apprise: a send failed")
    return sends / (time.perf_counter() - started), (time.process_time() - cpu) / sends * 1e3


def inprocess(runtime, channel: str, warm: list, ids: list) -> tuple[float, float]:
    """Sends/s and CPU ms per send of this process."""
    from clarion.core.deliver import deliver

    recorder = Recorder()

    def run(batch: list) -> None:
        for start in range(0, len(batch), 100):
            deliver(
                batch[start : start + 100],
                channel=channel,
                sessions=runtime.sessions,
                settings=runtime.settings,
                channels=runtime.channels,
                scheduler=recorder,
            )

    run(warm)
    started, cpu = time.perf_counter(), time.process_time()
    run(ids)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if recorder.retries or recorder.dead:
        raise RuntimeError(f"{channel}: {recorder.retries} retries, {recorder.dead} dead")
    return len(ids) / seconds, cpu / len(ids) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    env = common.fresh_run(DATABASE, "WARNING")
    port, count = common.free_port(), multiprocessing.Value("l", 0)
    peer = multiprocessing.Process(target=_serve, args=(port, count), daemon=True)
    peer.start()
    time.sleep(0.5)
    chat_url = f"json://127.0.0.1:{port}/chat"
    os.environ["CLARION_SMS__URL"] = f"json://127.0.0.1:{port}/sms?:to={{phone}}"
    from clarion.runtime import Runtime
    from clarion.settings import Settings

    runtime = Runtime(Settings())
    ok = True
    try:
        print(f"{args.sends} sends per phase, one at a time; receiver on 127.0.0.1:{port}")
        print(
            f"{'channel':8} {'raw Apprise/s':>14} {'deliver step/s':>15} {'ratio':>6}"
            f" {'raw CPU ms':>11} {'deliver CPU ms':>15}"
        )
        for channel, value, raw_url in (
            ("chat", chat_url, chat_url),
            ("sms", PHONE, f"json://127.0.0.1:{port}/sms?:to=%2B33612345678"),
        ):
            who = add_addresses(runtime, channel, value, args.sends + args.warmup, channel)
            ids = create_deliveries(runtime, channel, who)
            warm, measured = ids[: args.warmup], ids[args.warmup :]
            raw, raw_cpu = baseline(raw_url, args.sends)
            before = count.value
            ours, ours_cpu = inprocess(runtime, channel, warm, measured)
            if count.value - before != len(ids):
                ok = False
                print(f"  !! {channel}: receiver got {count.value - before} of {len(ids)}")
            ratio = ours / raw
            ok = ok and ratio >= RATIO
            print(
                f"{channel:8} {raw:14.0f} {ours:15.0f} {ratio:6.2f}"
                f" {raw_cpu:11.2f} {ours_cpu:15.2f}"
            )
    finally:
        runtime.close()
        peer.terminate()
    del env
    print(f"target >= {RATIO:.1f} x raw Apprise: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
