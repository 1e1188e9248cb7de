"""Where the time goes in a ``py-spy record --format raw`` profile of the channels benchmark.

Each sampled stack is put in the first bucket whose pattern it matches, so the shares add
up to 100%. py-spy's idle detection is imperfect with ``--nonblocking``: a thread waiting
in ``select``/``poll`` (the SMTP loop thread, psycopg waiting for the server) is sometimes
sampled as busy; those samples get their own bucket, and the DB buckets include some
waiting for PostgreSQL. Use the figures for proportions, and the CPU ms per message the
benchmark measures (from /proc) for absolute cost.

    .venv/bin/python -m bench.channels_profile PROFILE.txt ...
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

BUCKETS = [
    ("(waiting in select/poll, sampled as busy)", r"(?:select|poll) \([^;]*$"),
    ("email: SMTP conversation (aiosmtplib + asyncio, loop thread)", r"Thread\._bootstrap"),
    ("email: waiting on the SMTP loop thread (LoopThread.run)", r"LoopThread\.run"),
    ("email: render, Jinja2", r"jinja2/"),
    ("email: render, unsubscribe token", r"unsubscribe_token"),
    ("email: render, MIME bytes (channels/email/mime.py)", r"EmailChannel\.render"),
    ("push: encrypt (pywebpush, http_ece)", r"WebPusher\.encode|http_ece"),
    ("push: POST (http.client; requests, urllib3 in baselines)", r"requests/|urllib3/|http/client"),
    ("push: render the payload", r"WebPushChannel\.render"),
    ("push: rest of send (VAPID token cache, checks)", r"WebPushChannel\.send"),
    ("DB: pool checkout + pre-ping", r"_do_ping|_ConnectionFairy\._checkout|Pool\.connect"),
    ("DB: claim + contexts + targets (one per claim chunk)", r"claim \(clarion/db|_jobs \("),
    ("DB: commit", r"SessionTransaction\.commit|Transaction\.commit|do_commit"),
    ("DB: record the outcome (one statement)", r"_record \("),
    ("DB: other SQLAlchemy / psycopg", r"sqlalchemy/|psycopg/"),
    ("Celery, kombu, billiard (task plumbing, retry publish)", r"celery/|kombu/|billiard/"),
]


def summary(path: Path | str) -> list[tuple[float, str]]:
    counts: Counter[str] = Counter()
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        name = next((b for b, pattern in BUCKETS if re.search(pattern, stack)), "other")
        counts[name] += int(n)
    total = sum(counts.values()) or 1
    return [(100 * n / total, name) for name, n in counts.most_common()]


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg)
        for share, name in summary(arg):
            print(f"  {share:5.1f}%  {name}")
