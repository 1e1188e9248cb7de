"""Log records lose their secrets as they are made, and keep everything else."""

from __future__ import annotations

import logging
import sys

from clarion import logs

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLWJ5dGVz"
KEY = "clk_" + "A1b2" * 10
WHSEC = "whsec_" + "Zm9vYmFy" * 5 + "="


def test_tokens_keys_and_secrets_are_redacted_and_the_rest_is_kept():
    line = (
        f"GET /v1/me/stream/sse?since=4&token={JWT}&x=1 key {KEY} prefix clk_abcdefgh "
        f"secret {WHSEC} authorization: Bearer opaque-token-value"
    )
    assert logs.redact(line) == (
        "GET /v1/me/stream/sse?since=4&token=[redacted]&x=1 key clk_[redacted] prefix "
        "clk_abcdefgh secret whsec_[redacted] authorization: Bearer [redacted]"
    )


def test_a_record_keeps_its_argument_types_and_its_traceback_is_redacted():
    logs.install()
    logs.install()  # idempotent: one factory, not two stacked
    try:
        raise ValueError(f"bad link ?token={JWT}")
    except ValueError:
        record = logging.getLogger("uvicorn.access").makeRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "GET", f"/v1/unsubscribe?token={JWT}", "1.1", 200),
            None,
        )
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        failed.exc_info = sys.exc_info()
        logs.redact_record(failed)
    # uvicorn's access formatter unpacks args: still five, the status still an int.
    assert record.args == ("127.0.0.1:5", "GET", "/v1/unsubscribe?token=[redacted]", "1.1", 200)
    assert JWT not in logging.Formatter().format(failed)
    assert "token=[redacted]" in failed.exc_text
