"""The email channel against a real SMTP server (aiosmtpd), through the real pipeline."""

from __future__ import annotations

import os
import subprocess
import threading
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from clarion import channels
from clarion.api.app import create_app
from clarion.channels import ChannelConfigError
from clarion.channels.email.sender import Outgoing
from clarion.core import enqueue, queues
from clarion.core.schemas import NotificationCreate
from clarion.db.models import DeadLetter, Delivery
from clarion.ids import utcnow
from tests.broker import drain, queued
from tests.channels import FAST_RETRY, outcomes
from tests.channels.smtp import PASSWORD, SENDER, USER, SmtpServer, give_email
from tests.conftest import process_env, server_settings
from tests.e2e.procs import CLARION


def notify(rt, recipients=("ada",), **fields):
    values = {"category": "links", "title": "Your link expires", "channels": ["email"], **fields}
    msg = enqueue.prepare(NotificationCreate(recipients=list(recipients), **values))
    enqueue.enqueue(rt.celery, msg)
    return [nid for nid, _ in msg.items]


def delivery(rt, nid) -> Delivery:
    with rt.sessions() as s:
        return s.scalars(select(Delivery).where(Delivery.notification_id == nid)).one()


@pytest.fixture
def rt(make_runtime, smtp_server):
    return make_runtime(**FAST_RETRY, **smtp_server.settings())


def test_an_email_has_text_and_html_parts_escaped_and_the_headers_receivers_need(rt, smtp_server):
    give_email(rt, "ada", "ada@example.com")
    [nid] = notify(rt, title="Report <script>", body="5 < 6 & done", url="https://app.example/l/1")
    drain(rt.celery)

    [got] = smtp_server.messages
    m = got.message
    assert got.sender == SENDER and got.recipients == ["ada@example.com"]
    assert m["To"] == "Ada <ada@example.com>" and m["Subject"] == "Report <script>"
    assert m.get_content_type() == "multipart/alternative"
    text = m.get_body(("plain",)).get_content()
    html = m.get_body(("html",)).get_content()
    assert "5 < 6 & done" in text and "https://app.example/l/1" in text
    assert "Report &lt;script&gt;" in html and "5 &lt; 6 &amp; done" in html
    assert "<script>" not in html and 'href="https://app.example/l/1"' in html
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert m["List-Unsubscribe"].startswith("<http") and m["List-Unsubscribe"].endswith(">")
    row = delivery(rt, nid)
    assert row.status == "sent" and row.provider_ref == m["Message-ID"]
    assert m["Message-ID"] == f"<{row.id}@clarion.test>"


def test_a_russian_email_arrives_7_bit_and_reads_back_in_russian(rt, smtp_server):
    give_email(rt, "ivan", "ivan@example.com", name="Иван Петров")
    title, body = "Ваша ссылка истекает", "Продлите её до «пятницы» — " + "очень " * 100
    notify(rt, recipients=("ivan",), title=title, body=body, url="https://app.example/l/1")
    drain(rt.celery)

    [got] = smtp_server.messages
    m = got.message
    # Headers and bodies are encoded (RFC 2047, quoted-printable or base64): any relay
    # takes it, without 8BITMIME, and no line passes RFC 5322's limit.
    assert got.raw.isascii() and max(map(len, got.raw.splitlines())) <= 998
    assert m["Subject"] == title and m["To"] == "Иван Петров <ivan@example.com>"
    assert m["From"] == f"Clarion <{SENDER}>" and m["Date"].datetime is not None
    parts = list(m.iter_parts())
    assert [(p.get_content_type(), p.get_content_charset()) for p in parts] == [
        ("text/plain", "utf-8"),
        ("text/html", "utf-8"),
    ]
    text = m.get_body(("plain",)).get_content()
    html = m.get_body(("html",)).get_content()
    assert body in text.replace("\r\n", "\n") and "Продлите её до «пятницы»" in html
    assert m["List-Unsubscribe"].startswith("<http") and m.defects == []


def test_starttls_and_auth_are_used_when_configured(make_runtime, smtp_tls_server):
    rt = make_runtime(**smtp_tls_server.settings())
    give_email(rt, "ada")
    [nid] = notify(rt)
    drain(rt.celery)

    [got] = smtp_tls_server.messages
    assert got.tls and got.authenticated
    assert delivery(rt, nid).status == "sent"


# The test server itself warns that it takes AUTH in clear: that is what is tested.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_credentials_are_sent_in_clear_only_when_a_setting_says_so(make_runtime, pg_url, tmp_path):
    server = SmtpServer(tmp_path, plain_auth=True).start()
    try:
        clear = server.settings(username=USER, password=PASSWORD)
        with pytest.raises(ChannelConfigError, match="CLARION_SMTP_ALLOW_PLAINTEXT_AUTH"):
            channels.build("email", server_settings(pg_url, **clear))
        fallback = server.settings(fallback_host="h", fallback_username="u")
        fallback["smtp"]["fallback_password"] = "p"
        with pytest.raises(ChannelConfigError, match="FALLBACK_USERNAME"):
            channels.build("email", server_settings(pg_url, **fallback))

        clear["smtp"]["allow_plaintext_auth"] = True
        rt = make_runtime(**clear)
        give_email(rt, "ada")
        [nid] = notify(rt)
        drain(rt.celery)
        [got] = server.messages
        assert got.authenticated and not got.tls
        assert delivery(rt, nid).status == "sent"
    finally:
        server.stop()


def test_a_worker_with_credentials_in_clear_refuses_to_start(runtime):
    env = process_env(
        runtime.settings.database_url,
        CLARION_SMTP_HOST="127.0.0.1",
        CLARION_SMTP_FROM=SENDER,
        CLARION_SMTP_USERNAME="u",
        CLARION_SMTP_PASSWORD="p",
    )
    done = subprocess.run(
        [*CLARION, "worker"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "CLARION_SMTP_ALLOW_PLAINTEXT_AUTH" in done.stderr


def test_one_smtp_session_carries_a_whole_batch(rt, smtp_server):
    give_email(rt, "ada")
    give_email(rt, "bob")
    notify(rt, recipients=("ada", "bob"))
    notify(rt, recipients=("ada",), title="second")
    drain(rt.celery, names=(queues.CREATE,))
    assert drain(rt.celery) == 2  # two deliver tasks
    peers = {got.peer for got in smtp_server.messages}
    assert len(smtp_server.messages) == 3 and len(peers) == 1


def test_a_session_the_relay_closed_while_idle_is_replaced_without_a_retry(rt, smtp_server):
    give_email(rt, "ada")
    notify(rt, title="first")
    drain(rt.celery)
    smtp_server.stop()  # the relay goes away, closing the idle session, and comes back
    smtp_server.start()
    [nid] = notify(rt, title="second")
    drain(rt.celery)

    row = delivery(rt, nid)
    assert (row.status, row.attempts) == ("sent", 1)
    first, second = smtp_server.messages[0], smtp_server.messages[-1]
    assert len(smtp_server.messages) == 2 and first.peer != second.peer


def test_a_threads_pools_first_sends_at_once_share_one_session(rt, smtp_server):
    channel = rt.channels.get("email")  # no send yet: no session, no event loop
    start, errors = threading.Barrier(4), []

    def send(i: int) -> None:
        start.wait()
        email = Outgoing(f"<{i}@clarion.test>", f"u{i}@example.com", b"Subject: hi\r\n\r\nhi\r\n")
        try:
            channel.send(email, {})
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(smtp_server.messages) == 4
    assert len({got.peer for got in smtp_server.messages}) == 1


def test_a_421_is_retried_and_then_delivered(rt, smtp_server):
    give_email(rt, "ada")
    smtp_server.handler.replies = ["421 4.7.0 Try again later"]
    [nid] = notify(rt)
    drain(rt.celery)

    row = delivery(rt, nid)
    assert row.status == "sent" and row.attempts == 2
    assert outcomes(rt, row.id) == ["retry", "sent"]
    assert len(smtp_server.messages) == 1


def test_a_550_is_a_dead_letter_with_the_reply(rt, smtp_server):
    give_email(rt, "ada")
    smtp_server.handler.steady = "550 5.1.1 No such user here"
    [nid] = notify(rt)
    drain(rt.celery, names=(queues.CREATE, queues.deliver_queue("email")))

    row = delivery(rt, nid)
    assert row.status == "dead" and "550 5.1.1 No such user here" in row.last_error
    with rt.sessions() as s:
        [letter] = s.scalars(select(DeadLetter)).all()
    assert letter.delivery_id == row.id and letter.attempts == 1 and "550" in letter.error
    assert queued(rt.celery, queues.DEAD_LETTER) == 1
    assert smtp_server.messages == []


def test_the_relay_down_for_a_while_then_up_delivers_after_it_returns(rt, smtp_server):
    give_email(rt, "ada")
    smtp_server.stop()
    [nid] = notify(rt)
    drain(rt.celery, limit=2)  # create, then one failed attempt

    row = delivery(rt, nid)
    assert row.status == "failed" and "relay" in row.last_error
    assert queued(rt.celery, queues.deliver_queue("email")) == 1  # the retry, with countdown

    smtp_server.start()
    drain(rt.celery)
    assert delivery(rt, nid).status == "sent" and len(smtp_server.messages) == 1


def test_the_fallback_relay_takes_over_while_the_first_keeps_failing(make_runtime, smtp_server):
    from tests.e2e.procs import free_port

    settings = smtp_server.settings(port=free_port(), failover_after=1)
    settings["smtp"].update(fallback_host="127.0.0.1", fallback_port=smtp_server.port)
    rt = make_runtime(**settings)
    give_email(rt, "ada")
    [nid] = notify(rt)
    drain(rt.celery)

    assert delivery(rt, nid).status == "sent" and len(smtp_server.messages) == 1


def test_a_subscriber_without_an_address_gets_a_skipped_delivery_with_the_reason(rt):
    [nid] = notify(rt, recipients=("nobody",))
    drain(rt.celery)
    row = delivery(rt, nid)
    assert (row.status, row.last_error) == ("skipped", "no email address")


def test_the_one_click_unsubscribe_link_turns_that_category_off(rt, smtp_server):
    give_email(rt, "ada")
    notify(rt, category="campaigns")
    drain(rt.celery)
    link = smtp_server.messages[0].message["List-Unsubscribe"].strip("<>")
    path = urlsplit(link)._replace(scheme="", netloc="").geturl()

    with TestClient(create_app(runtime=rt)) as api:
        page = api.get(path)
        assert page.status_code == 200 and "<form" in page.text  # GET changes nothing
        assert api.post(path.replace("token=", "token=x")).status_code == 400
        done = api.post(
            path,
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200 and "no longer receive" in done.text

    [campaign] = notify(rt, category="campaigns", title="again")
    [other] = notify(rt, category="links", title="still wanted")
    [urgent] = notify(rt, category="campaigns", title="critical", severity="critical")
    drain(rt.celery)
    assert (delivery(rt, campaign).status, delivery(rt, campaign).last_error) == (
        "skipped",
        "opted out",
    )
    assert delivery(rt, other).status == "sent"
    assert delivery(rt, urgent).status == "sent"  # critical bypasses opt-outs
    # The critical one went through the priority lane, so its place in line is not asserted.
    subjects = sorted(m.message["Subject"] for m in smtp_server.messages)
    assert subjects == ["Your link expires", "critical", "still wanted"]


def test_when_the_relay_answers_again_the_retries_waiting_out_their_backoff_go_at_once(
    make_runtime, smtp_server
):
    from clarion.core import provider, sweeper

    provider._checked.clear()  # another test's success in this process must not count
    rt = make_runtime(**smtp_server.settings(), retry_backoff_seconds=600)
    for name in ("ada", "bob", "cy"):
        give_email(rt, name)
    smtp_server.stop()
    waiting = notify(rt, recipients=("ada", "bob"))
    drain(rt.celery, limit=2)  # create, then the batch's failed attempts: parked for minutes
    assert {delivery(rt, nid).status for nid in waiting} == {"failed"}
    assert all(delivery(rt, nid).next_attempt_at > utcnow() for nid in waiting)

    smtp_server.start()
    notify(rt, recipients=("cy",))
    drain(rt.celery)  # cy's email is sent: the relay answers again
    assert sweeper.sweep(sessions=rt.sessions, settings=rt.settings, scheduler=rt) == {"failed": 2}
    drain(rt.celery)
    assert {delivery(rt, nid).status for nid in waiting} == {"sent"}
    assert len(smtp_server.messages) == 3
