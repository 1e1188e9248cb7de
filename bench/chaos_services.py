"""The chaos benchmark's own services, which its faults stop and restart: a private
PostgreSQL cluster (initdb in a temporary directory, run as ``postgres`` when started as
root), Redis with ``appendonly yes``, and an SMTP sink writing one line per received
Message-ID (``python -m bench.chaos_services PORT FILE``)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench import _common as common

# --- the SMTP sink (a subprocess: ``python -m bench.chaos_services PORT FILE``) --------


def smtp_main(port: int, path: str) -> None:
    from aiosmtpd.controller import Controller

    out = open(path, "a", buffering=1)  # noqa: SIM115 - one line per email, flushed

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd)
            for line in envelope.content.decode(errors="replace").splitlines():
                if line.lower().startswith("message-id:"):
                    out.write(line.split(":", 1)[1].strip() + "\n")
                    break
            return "250 OK"

    Controller(Sink(), hostname="127.0.0.1", port=port, server_hostname="chaos").start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


# --- private services ----------------------------------------------------------------------


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Services:
    """A private PostgreSQL cluster, Redis and SMTP sink under one temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clarion-chaos-"))
        os.chmod(self.dir, 0o777)  # noqa: S103 - initdb runs as postgres when we are root
        bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.pg_ctl, self.initdb = f"{bindir}/pg_ctl", f"{bindir}/initdb"
        self.pg_port, self.redis_port, self.smtp_port = (common.free_port() for _ in range(3))
        self.pgdata = self.dir / "pg"
        self.smtp_log = self.dir / "smtp.log"
        self.smtp: subprocess.Popen | None = None

    def start(self) -> None:
        subprocess.run(
            _as_postgres([self.initdb, "-D", str(self.pgdata), "-A", "trust", "-U", "postgres"]),
            check=True,
            capture_output=True,
        )
        self.start_postgres()
        with psycopg.connect(self.pg_admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE chaos")
        self.start_redis()
        self.start_smtp()

    @property
    def pg_admin(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    def pg(self, *args: str) -> None:
        opts = f"-p {self.pg_port} -k {self.dir} -c listen_addresses=127.0.0.1"
        cmd = [self.pg_ctl, "-D", str(self.pgdata), "-l", str(self.dir / "pg.log"), "-w"]
        subprocess.run(_as_postgres([*cmd, "-o", opts, *args]), check=True, capture_output=True)

    def start_postgres(self) -> None:
        self.pg("start")

    def start_redis(self) -> None:
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1"]
            + ["--port", str(self.redis_port), "--dir", str(self.dir), "--save", ""]
            + ["--appendonly", "yes", "--logfile", str(self.dir / "redis.log")]
            + ["--pidfile", str(self.dir / "redis.pid")],
            check=True,
        )
        common.wait_port(self.redis_port, common.Processes(), 15)

    def stop_redis(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "shutdown"], check=False)
        deadline = time.monotonic() + 15
        while (self.dir / "redis.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def start_smtp(self) -> None:
        argv = [sys.executable, "-m", "bench.chaos_services", str(self.smtp_port)]
        self.smtp = subprocess.Popen([*argv, str(self.smtp_log)], cwd=common.ROOT)
        common.wait_port(self.smtp_port, common.Processes(), 15)

    def stop_smtp(self) -> None:
        if self.smtp is not None:
            self.smtp.kill()
            self.smtp.wait(5)

    def close(self) -> None:
        self.stop_smtp()
        self.stop_redis()
        stop = [self.pg_ctl, "-D", str(self.pgdata), "stop", "-m", "immediate"]
        subprocess.run(_as_postgres(stop), check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    smtp_main(int(sys.argv[1]), sys.argv[2])
