"""How the limits count (docs/operations/rate-limits.md): a send passes its key's request
rate and its daily quota in one Redis round trip, all or nothing, exact when many API
processes race; and every answer of a limited route says where its limits stand
(``RateLimit`` / ``RateLimit-Policy``), not only a 429."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from fastapi.testclient import TestClient
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from clarion.api.app import create_app
from clarion.core.ratelimits import SLIDING, Check, Limits, item
from tests.conftest import make_key

SEND = "/v1/notifications"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def send(client: TestClient, key: dict, *recipients: str):
    body = {"recipients": list(recipients), "category": "news", "title": "hello"}
    return client.post(SEND, json=body, headers=key)


def test_fifty_racing_clients_never_overshoot_and_a_refusal_costs_nothing(runtime):
    url = runtime.settings.redis_url
    rate, quota = "30/minute", "40/day"
    start = threading.Barrier(50)

    def one(_) -> bool:
        limits = Limits(url)  # its own connections, as another API process would have
        start.wait()
        refusal, _ = limits.hit_all(
            Check(rate, "api-key", ("7",)), Check(quota, "daily-quota", ("7",), 2, SLIDING)
        )
        return refusal is None

    with ThreadPoolExecutor(50) as pool:
        accepted = sum(pool.map(one, range(50)))

    assert accepted == 20  # 40 recipients / 2 each; the rate (30) would have let 30 in
    # The library reads the same counters: the 30 refused sends took nothing of the rate.
    storage = Limits(url).storage
    moving = MovingWindowRateLimiter(storage).get_window_stats(item(rate), "api-key", "7")
    sliding = SlidingWindowCounterRateLimiter(storage).get_window_stats(
        item(quota), "daily-quota", "7"
    )
    assert (moving.remaining, sliding.remaining) == (10, 0)


def test_concurrent_sends_through_two_api_processes_are_counted_exactly(make_runtime, runtime):
    apps = [
        TestClient(
            create_app(
                runtime=make_runtime(api_key_daily_quota=20, api_key_rate_limit="100/minute")
            )
        )
        for _ in range(2)
    ]
    key = bearer(make_key(runtime, "notify"))
    with apps[0] as first, apps[1] as second:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda i: send((first, second)[i % 2], key, "ada"), range(50)))
        codes = sorted(a.status_code for a in answers)
        after = first.get(f"{SEND}/00000000-0000-0000-0000-000000000000", headers=key)

    assert codes == [202] * 20 + [429] * 30
    assert {a.json()["limit"] for a in answers if a.status_code == 429} == {"daily-quota"}
    # 20 sends and this request counted against the 100/minute; the refused not.
    assert after.headers["ratelimit"].startswith('"api-key";r=79;t=')


def test_a_send_costs_one_round_trip_to_the_limits_store(make_runtime, runtime):
    rt = make_runtime(api_key_daily_quota=1000)
    key = bearer(make_key(runtime, "notify"))
    store = redis.Redis.from_url(rt.settings.redis_url)
    db = store.connection_pool.connection_kwargs.get("db", 0)
    marker = redis.Redis.from_url(rt.settings.redis_url)
    marker.ping()  # connected (and its SELECT sent) before the monitor starts
    with TestClient(create_app(runtime=rt)) as api:
        assert send(api, key, "warm-up").status_code == 202  # loads the script once
        seen: list[str] = []
        with store.monitor() as monitor:
            listening = threading.Thread(target=lambda: _collect(monitor, db, seen))
            listening.start()
            answer = send(api, key, "ada", "bob", "cy")
            marker.echo("end-of-send")
            listening.join(10)

    assert answer.status_code == 202
    assert seen == ["EVALSHA"]  # the script's own commands run inside Redis, not counted


def _collect(monitor, db: int, seen: list[str]) -> None:
    for command in monitor.listen():
        if command["db"] != db or command["client_type"] == "lua":
            continue
        if command["command"] == "ECHO end-of-send":
            return
        seen.append(command["command"].split()[0].upper())


def fields(answer) -> tuple[str, str]:
    return answer.headers["ratelimit-policy"], answer.headers["ratelimit"]


def test_successful_answers_say_where_their_limits_stand(make_runtime, runtime, user):
    rt = make_runtime(
        api_key_rate_limit="5/minute", api_key_daily_quota=10, user_rate_limit="4/minute"
    )
    admin, producer = bearer(make_key(runtime, "admin")), bearer(make_key(runtime, "notify"))
    with TestClient(create_app(runtime=rt)) as api:
        listed = api.get("/v1/keys", headers=admin)
        sent = send(api, producer, "a", "b", "c")
        inbox = api.get("/v1/me/notifications", headers=user("ada"))

    assert listed.status_code == 200
    policy, standing = fields(listed)
    assert policy == '"api-key";q=5;w=60'
    assert re.fullmatch(r'"api-key";r=4;t=(\d+)', standing)
    assert sent.status_code == 202
    policy, standing = fields(sent)
    assert policy == '"api-key";q=5;w=60, "daily-quota";q=10;w=86400'
    assert re.fullmatch(r'"api-key";r=4;t=\d+, "daily-quota";r=7;t=\d+', standing)
    assert inbox.status_code == 200
    assert fields(inbox)[0] == '"user";q=4;w=60'
    assert fields(inbox)[1].startswith('"user";r=3;t=')


def test_hits_older_than_the_window_are_not_counted(runtime):
    limits = Limits(runtime.settings.redis_url)
    key = limits.storage.prefixed_key(item("3/minute").key_for("api-key", "9"))
    now = time.time()
    # Newest first, as the library stores them: two in the window, two expired.
    redis.Redis.from_url(runtime.settings.redis_url).rpush(
        key, now - 10, now - 40, now - 100, now - 200
    )

    fits, [standing] = limits.hit_all(Check("3/minute", "api-key", ("9",)))
    refused, _ = limits.hit_all(Check("3/minute", "api-key", ("9",)))

    assert fits is None and standing.remaining == 0
    assert standing.reset in (20, 21)  # when the hit 40 s ago leaves the window
    assert refused is not None and refused.retry_after in (20, 21)


def test_sends_counted_together_are_each_all_or_nothing_and_survive_a_script_flush(runtime):
    limits = Limits(runtime.settings.redis_url)
    rate, quota = "10/minute", "5/day"

    def request() -> tuple[Check, ...]:
        return Check(rate, "api-key", ("8",)), Check(quota, "daily-quota", ("8",), 2, SLIDING)

    redis.Redis.from_url(runtime.settings.redis_url).script_flush()  # as a restarted Redis
    outcomes = limits.hit_groups([request(), request(), request()])

    assert [refusal is None for refusal, _ in outcomes] == [True, True, False]
    assert outcomes[1][1][1].remaining == 1  # the second send's quota: 5 - 2 - 2
    assert outcomes[2][0].name == "daily-quota"
    storage = limits.storage
    moving = MovingWindowRateLimiter(storage).get_window_stats(item(rate), "api-key", "8")
    assert moving.remaining == 8  # the refused third took nothing of the rate
