"""`clarion migrate --check`: what deploy/k8s's init containers wait on."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from clarion.db.migrate import upgrade
from tests.conftest import PG_ADMIN, SECRET
from tests.e2e.procs import CLARION


@pytest.fixture
def fresh_url() -> Iterator[str]:
    name = f"clarion_check_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        yield f"{base}/{name}"
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def check(url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLARION_DATABASE_URL": url, "CLARION_SECRET_KEY": SECRET}
    return subprocess.run(
        [*CLARION, "migrate", "--check"], env=env, capture_output=True, text=True, timeout=60
    )


def test_check_fails_until_the_database_is_at_head_and_changes_nothing(fresh_url):
    empty = check(fresh_url)
    assert empty.returncode == 1 and "at none" in empty.stderr
    upgrade(fresh_url, "0013")
    old = check(fresh_url)
    assert old.returncode == 1 and "at 0013" in old.stderr
    assert check(fresh_url).returncode == 1  # --check migrated nothing
    upgrade(fresh_url)
    done = check(fresh_url)
    assert done.returncode == 0 and "up to date" in done.stdout
