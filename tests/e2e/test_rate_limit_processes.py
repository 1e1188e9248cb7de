"""Rate limits across real processes: two ``clarion api`` processes count one key's
requests together (Redis), and a key's own limits are set with ``clarion keys``."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, run, wait_ready

pytestmark = pytest.mark.e2e


def post(base: str, key: str, *recipients: str) -> httpx.Response:
    body = {"recipients": list(recipients), "category": "news", "title": "hi"}
    auth = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{base}/v1/notifications", json=body, headers=auth)


@pytest.fixture
def two_apis(runtime, tmp_path):
    env = process_env(
        runtime.settings.database_url,
        CLARION_LOG_LEVEL="WARNING",
        CLARION_API_KEY_RATE_LIMIT="4/minute",
        CLARION_API_KEY_CACHE_SECONDS="0",  # a key's new limits apply at once
    )
    procs, bases = [], []
    try:
        for i in range(2):
            port = free_port()
            procs.append(Proc(["api", "--port", str(port)], env, tmp_path / f"api{i}.log"))
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs, strict=True):
            wait_ready(base, proc)
        yield env, bases
    finally:
        for proc in procs:
            proc.stop()


def test_two_api_processes_share_a_keys_limit(two_apis):
    env, (first, second) = two_apis
    key = run(["keys", "create", "shared", "--scope", "notify"], env).split()[-1]

    answers = [post((first, second)[i % 2], key, "ada") for i in range(5)]

    assert [a.status_code for a in answers] == [202] * 4 + [429]
    refused = answers[-1]
    assert refused.headers["ratelimit-policy"] == '"api-key";q=4;w=60'
    assert refused.headers["ratelimit"] == f'"api-key";r=0;t={refused.headers["retry-after"]}'


def test_a_keys_own_limits_set_with_the_cli_override_the_settings(two_apis):
    env, (first, second) = two_apis
    made = run(["keys", "create", "own", "--scope", "notify", "--rate", "2/minute"], env)
    key, key_id = made.split()[-1], made.split()[3]
    assert [post(first, key, "a").status_code for _ in range(3)] == [202, 202, 429]

    capped = run(["keys", "create", "capped", "--scope", "notify", "--daily-quota", "3"], env)
    capped_key, capped_id = capped.split()[-1], capped.split()[3]
    assert post(second, capped_key, "a", "b", "c", "d").status_code == 429  # 4 > 3
    assert post(second, capped_key, "a", "b", "c").status_code == 202

    changed = run(["keys", "limits", capped_id, "--daily-quota", "0"], env)
    assert "daily quota none" in changed
    listed = run(["keys", "list"], env)
    assert f"{key_id}\town" in listed and "rate 2/minute" in listed
    assert post(first, capped_key, *[f"u{i}" for i in range(50)]).status_code == 202
