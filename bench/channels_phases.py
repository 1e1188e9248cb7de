"""The measured phases of the channel benchmark: email and web push (bench/channels.py)."""

from __future__ import annotations

import time

from bench import _common as common
from bench.channels_kit import (
    EMAIL_RATE,
    EMAIL_RATIO,
    PUSH_RATIO,
    SENDER,
    SUBJECT,
    Figure,
    add_email_subscribers,
    add_push_subscribers,
    cpu_ms,
    create_deliveries,
    sample_message,
)


class Phases:
    """Mixed into Bench: one method per channel, each returning its figures."""

    # -- email ------------------------------------------------------------------------------
    def email_baseline(self, port: int, raw: bytes, sends: int, groups: dict) -> Figure:
        """Raw aiosmtplib, one session, one message at a time; on the loop the channel's own
        background loop uses (uvloop when installed)."""
        import aiosmtplib

        from clarion.channels.aio import new_loop

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

        loop = new_loop()
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
        raw = channel.render(message, {}).data  # the bytes the channel hands to SMTP
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
        import http.client
        from urllib.parse import urlsplit

        import requests
        from py_vapid import Vapid02
        from pywebpush import WebPusher, webpush

        from clarion.channels.push.sender import load_private_key, origin

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
        # The floor for a sender that must POST each message: pywebpush's encryption, a VAPID
        # header signed once and reused (as the channel does), and the POST on one kept-alive
        # http.client connection, the cheapest client measured (urllib3 costs ~2.5 x, requests
        # ~5 x as much CPU per POST).
        parts = urlsplit(subs[0]["endpoint"])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        floor_headers = {
            **payload["headers"],
            "Content-Encoding": "aes128gcm",
            "Authorization": vapid.sign(claims())["Authorization"],
        }

        def floor(n: int) -> None:
            for i in range(n):
                sub = subs[i % len(subs)]
                body = WebPusher(sub).encode(data)["body"]
                conn.request("POST", urlsplit(sub["endpoint"]).path, body, floor_headers)
                response = conn.getresponse()
                response.read()
                if response.status != 201:
                    raise RuntimeError(f"the push peer answered {response.status}")

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
            ("push: raw encrypt + POST through http.client, token reused (floor)", floor),
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
        conn.close()
        self.push_costs = {
            "sign": cpu_ms(lambda: vapid.sign(claims())),
            "encrypt": cpu_ms(lambda: WebPusher(subs[0]).encode(data)),
        }
        return figures

    def push(self) -> dict[str, Figure]:
        from clarion.channels.push.sender import generate_vapid_keys

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
        figures["baseline"], figures["raw-post"], figures["floor"] = self.push_baselines(
            payload, subs, args.baseline_pushes, groups
        )
        posts = 2 * (args.baseline_pushes + min(100, args.baseline_pushes))  # with warm-ups
        self.check("raw pywebpush POST", counters, accepted, posts)
        self.report(figures["baseline"])
        self.report(figures["raw-post"], figures["baseline"])
        self.report(figures["floor"], figures["baseline"])
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
        floor = figures["floor"]
        for key in ("in", "worker"):
            print(f"  {figures[key].label}: {figures[key].rate / floor.rate:.2f} x the floor")
        return figures
