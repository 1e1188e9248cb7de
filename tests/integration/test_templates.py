"""Templates through the real API, broker, create and deliver steps, on PostgreSQL and
Redis, with a real SMTP server and a real push service: versions, locale fallback,
stored over built-in, the sandbox, and sending by template in each recipient's language."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from clarion.api.app import create_app
from clarion.core import queues, template_store
from clarion.db import templates as templates_db
from clarion.db.models import DeadLetter, Delivery, Notification
from tests.broker import drain, queued
from tests.channels import FAST_RETRY
from tests.conftest import make_key
from tests.unit.test_template_sandbox import (
    RENDER_REFUSED,
    SAMPLES,
    SAVE_REFUSED,
    SAVE_TRIAL_REFUSED,
)

TEMPLATES = "/v1/templates"
SEND = "/v1/notifications"
PROBLEM = "urn:clarion:problem:"
ORDER = {"order": "A-17", "eta": "<tomorrow>"}


@pytest.fixture
def admin(runtime):
    return {"Authorization": f"Bearer {make_key(runtime, 'admin')}"}


def save(client, admin, **fields):
    body = {
        "key": "order_shipped",
        "channel": "*",
        "locale": "en",
        "subject": "Order {{ order }} shipped",
        "text": "It arrives {{ eta }}.",
        **fields,
    }
    return client.post(TEMPLATES, json=body, headers=admin)


def saved(client, admin, **fields) -> dict:
    response = save(client, admin, **fields)
    assert response.status_code == 201, response.text
    return response.json()


def preview(client, admin, key="order_shipped", **body):
    return client.post(f"{TEMPLATES}/{key}/preview", json={"data": ORDER, **body}, headers=admin)


def subject_of(client, admin, key="order_shipped", **body) -> str:
    response = preview(client, admin, key, **body)
    assert response.status_code == 200, response.text
    return response.json()["subject"]


def profile(client, producer, sid, **fields):
    response = client.put(f"/v1/subscribers/{sid}", json=fields, headers=producer)
    assert response.status_code == 200, response.text


# -- versions -------------------------------------------------------------------------------
def test_a_new_version_is_active_the_old_one_kept_and_can_be_activated_again(client, admin):
    v1 = saved(client, admin)
    assert (v1["version"], v1["active"], v1["builtin"]) == (1, True, False)
    assert v1["created_by"].startswith("api-key:test#")
    v2 = saved(client, admin, subject="Shipped: {{ order }}")
    assert (v2["version"], v2["active"]) == (2, True)
    assert subject_of(client, admin) == "Shipped: A-17"

    versions = client.get(f"{TEMPLATES}/order_shipped", headers=admin).json()["versions"]
    assert [(v["version"], v["active"]) for v in versions] == [(2, True), (1, False)]

    back = client.post(f"{TEMPLATES}/order_shipped/versions/{v1['id']}/activate", headers=admin)
    assert back.status_code == 200 and back.json()["active"] is True
    assert subject_of(client, admin) == "Order A-17 shipped"
    versions = client.get(f"{TEMPLATES}/order_shipped", headers=admin).json()["versions"]
    assert [(v["version"], v["active"]) for v in versions] == [(2, False), (1, True)]

    draft = saved(client, admin, subject="Draft {{ order }}", active=False)
    assert (draft["version"], draft["active"]) == (3, False)
    assert subject_of(client, admin) == "Order A-17 shipped"  # an inactive one is not used
    assert subject_of(client, admin, version_id=draft["id"]) == "Draft A-17"


def test_only_an_inactive_version_can_be_deleted(client, admin):
    v1 = saved(client, admin)
    v2 = saved(client, admin, subject="v2")
    refused = client.delete(f"{TEMPLATES}/order_shipped/versions/{v2['id']}", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["type"] == PROBLEM + "template-version-active"
    gone = client.delete(f"{TEMPLATES}/order_shipped/versions/{v1['id']}", headers=admin)
    assert gone.status_code == 204
    versions = client.get(f"{TEMPLATES}/order_shipped", headers=admin).json()["versions"]
    assert [v["version"] for v in versions] == [2]

    off = client.post(f"{TEMPLATES}/order_shipped/versions/{v2['id']}/deactivate", headers=admin)
    assert off.json()["active"] is False
    assert preview(client, admin).status_code == 404  # no active version left
    assert (
        client.delete(f"{TEMPLATES}/order_shipped/versions/{v2['id']}", headers=admin).status_code
        == 204
    )
    assert client.get(f"{TEMPLATES}/order_shipped", headers=admin).status_code == 404


def test_versions_of_another_key_are_not_reachable_and_templates_need_admin(
    client, admin, producer
):
    other = saved(client, admin, key="other")
    saved(client, admin)
    url = f"{TEMPLATES}/order_shipped/versions/{other['id']}/activate"
    assert client.post(url, headers=admin).status_code == 404
    assert client.get(TEMPLATES, headers=producer).status_code == 403
    assert save(client, producer).status_code == 403


def test_concurrent_saves_of_one_slot_each_get_their_own_version(runtime):
    def one(i):
        return template_store.save_version(
            sessions=runtime.sessions,
            key="race",
            channel="*",
            locale="en",
            subject=f"v{i}",
            html=None,
            text=None,
            active=True,
            created_by="test",
        ).version

    with ThreadPoolExecutor(4) as pool:
        numbers = sorted(pool.map(one, range(8)))
    assert numbers == list(range(1, 9))
    with runtime.sessions() as s:
        assert len(templates_db.active_versions(session=s, keys=["race"])) == 1


# -- fallback and built-ins -----------------------------------------------------------------
def test_locale_fallback_goes_ru_RU_to_ru_to_the_default_and_channel_to_any(client, admin):
    saved(client, admin, subject="EN {{ order }}")
    saved(client, admin, locale="ru", subject="RU {{ order }}")
    saved(client, admin, locale="ru", channel="email", subject="RU-EMAIL {{ order }}")

    assert subject_of(client, admin, channel="email", locale="ru-RU") == "RU-EMAIL A-17"
    assert subject_of(client, admin, channel="push", locale="ru-RU") == "RU A-17"
    assert subject_of(client, admin, channel="in_app", locale="ru_ru") == "RU A-17"
    assert subject_of(client, admin, channel="email", locale="de-AT") == "EN A-17"
    assert subject_of(client, admin, channel="email") == "EN A-17"  # the default locale
    chosen = preview(client, admin, channel="push", locale="ru-RU").json()["version"]
    assert (chosen["channel"], chosen["locale"], chosen["builtin"]) == ("*", "ru", False)


def test_a_stored_version_overrides_the_built_in_of_its_locale_only(client, admin):
    digest = {"data": SAMPLES["digest"]}
    listed = {t["key"]: t for t in client.get(TEMPLATES, headers=admin).json()}
    assert listed["digest"]["builtin"] and listed["link_expired"]["builtin"]
    assert all(a["builtin"] for a in listed["digest"]["active"])
    assert subject_of(client, admin, "digest", channel="email", **digest) == (
        "3 new notifications in links"
    )

    mine = saved(
        client, admin, key="digest", subject="Digest: {{ count }} in {{ category }}", text=None
    )
    assert subject_of(client, admin, "digest", channel="email", **digest) == "Digest: 3 in links"
    assert subject_of(client, admin, "digest", channel="email", locale="ru", **digest) == (
        "3 новых уведомления: links"
    )
    slots = {
        (a["channel"], a["locale"]): a["builtin"]
        for t in client.get(TEMPLATES, headers=admin).json()
        if t["key"] == "digest"
        for a in t["active"]
    }
    assert slots[("*", "en")] is False and slots[("*", "ru")] is True
    history = client.get(f"{TEMPLATES}/digest", headers=admin).json()["versions"]
    shipped_en = [v for v in history if v["builtin"] and (v["channel"], v["locale"]) == ("*", "en")]
    assert shipped_en[0]["active"] is False and shipped_en[0]["id"] is None

    client.post(f"{TEMPLATES}/digest/versions/{mine['id']}/deactivate", headers=admin)
    assert subject_of(client, admin, "digest", channel="email", **digest) == (
        "3 new notifications in links"
    )


# -- the sandbox through the API --------------------------------------------------------------
@pytest.mark.parametrize("source", SAVE_REFUSED)
def test_escape_attempts_are_refused_at_save_and_at_preview(client, admin, source):
    response = save(client, admin, html="<p>ok</p>\n" + source)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == PROBLEM + "template-unsafe"
    assert (problem["field"], problem["line"]) == ("html", 2)
    draft = {"subject": "s", "text": source}
    response = preview(client, admin, draft=draft)
    assert response.status_code == 422 and response.json()["field"] == "text"


@pytest.mark.parametrize("source", RENDER_REFUSED)
def test_escapes_built_at_render_time_fail_at_preview_without_leaking_internals(
    client, admin, source
):
    data = {**ORDER, "x": "s", "name": "__class__", "items": [1, 2]}
    if source in SAVE_TRIAL_REFUSED:  # unsafe whatever the data: refused at save already
        refused = save(client, admin, text=source, active=False)
        assert refused.status_code == 422
        assert refused.json()["type"] == PROBLEM + "template-unsafe"
        response = preview(client, admin, draft={"subject": "s", "text": source}, data=data)
    else:
        version = saved(client, admin, text=source, active=False)
        response = preview(client, admin, version_id=version["id"], data=data)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == PROBLEM + "template-unsafe" and problem["field"] == "text"
    assert "Traceback" not in response.text and ".py" not in response.text


BLOWUP = "{{ ('a'|center(50000000))|length }}"  # 36 characters, 400 MB unbounded


def test_a_template_that_builds_too_much_is_422_at_save_preview_and_send(
    client, admin, producer, runtime
):
    refused = save(client, admin, text=BLOWUP)
    assert refused.status_code == 422
    assert refused.json()["type"] == PROBLEM + "template-unsafe"
    draft = preview(client, admin, draft={"subject": "s", "text": BLOWUP})
    assert draft.status_code == 422 and draft.json()["type"] == PROBLEM + "template-unsafe"

    # Built from the data: it saves, and the preview and the send with that data are 422.
    saved(client, admin, text="{{ (eta|center(width))|length }}")
    data = {**ORDER, "width": 50_000_000}
    shown = preview(client, admin, data=data)
    assert shown.status_code == 422 and shown.json()["type"] == PROBLEM + "template-unsafe"
    send = {"recipients": ["ada"], "category": "orders", "template": "order_shipped"}
    sent = client.post(SEND, json={**send, "data": data}, headers=producer)
    assert sent.status_code == 422 and sent.json()["type"] == PROBLEM + "template-unsafe"
    assert queued(runtime.celery) == 0


def test_a_render_that_would_build_too_much_fails_its_delivery_with_the_reason(
    mail_rt, mail_api, smtp_server
):
    admin = {"Authorization": f"Bearer {make_key(mail_rt, 'admin')}"}
    producer = {"Authorization": f"Bearer {make_key(mail_rt, 'notify')}"}
    saved(mail_api, admin)
    # Only the Russian version builds from the data; the API checks the default locale.
    saved(mail_api, admin, locale="ru", text="{{ (eta|center(width))|length }}")
    profile(mail_api, producer, "ivan", locale="ru", email="ivan@example.com")
    send = {
        "recipients": ["ivan"],
        "category": "orders",
        "channels": ["email"],
        "template": "order_shipped",
        "data": {**ORDER, "width": 50_000_000},
    }
    assert mail_api.post(SEND, json=send, headers=producer).status_code == 202
    drain(mail_rt.celery)

    with mail_rt.sessions() as s:
        email = s.scalars(select(Delivery).where(Delivery.channel == "email")).one()
    assert email.status == "dead" and email.attempts == 1
    assert "builds more than" in email.last_error and "text" in email.last_error
    assert smtp_server.messages == []


def test_a_missing_variable_and_a_syntax_error_are_422s_saying_where(client, admin):
    saved(client, admin, html="<h1>{{ order }}</h1>\n<p>{{ customer.name }}</p>")
    response = preview(client, admin, channel="email", data={"order": "A", "eta": "x"})
    problem = response.json()
    assert response.status_code == 422 and problem["type"] == PROBLEM + "template-undefined"
    assert (problem["field"], problem["line"], problem["variable"]) == ("html", 2, "customer")
    assert "'customer' is undefined" in problem["detail"]

    broken = save(client, admin, text="fine\n{% for x in items %}never closed")
    assert broken.status_code == 422
    assert broken.json()["type"] == PROBLEM + "template-syntax"
    assert (broken.json()["field"], broken.json()["line"]) == ("text", 2)


# -- sending by template --------------------------------------------------------------------
def test_the_api_refuses_an_unknown_template_or_data_it_cannot_render(
    client, runtime, admin, producer
):
    send = {"recipients": ["ada"], "category": "orders", "template": "nope", "data": ORDER}
    response = client.post(SEND, json=send, headers=producer)
    assert response.status_code == 422
    assert response.json()["type"] == PROBLEM + "unknown-template"

    saved(client, admin, channel="email", subject="{{ order }}", text="{{ tracking_url }}")
    response = client.post(SEND, json={**send, "template": "order_shipped"}, headers=producer)
    problem = response.json()
    assert response.status_code == 422 and problem["type"] == PROBLEM + "template-undefined"
    assert (problem["variable"], problem["channel"], problem["field"]) == (
        "tracking_url",
        "email",
        "text",
    )
    assert queued(runtime.celery, queues.CREATE) == 0  # nothing was accepted

    ok = {**send, "template": "order_shipped", "data": {**ORDER, "tracking_url": "u"}}
    assert client.post(SEND, json=ok, headers=producer).status_code == 202


def test_a_send_by_template_reads_no_template_from_the_database_while_cached(
    make_runtime, producer, admin
):
    rt = make_runtime(template_cache_seconds=3600)
    now = [0.0]
    rt.templates.clock = lambda: now[0]
    queries = []
    event.listen(
        rt.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: (
            queries.append(statement) if "FROM templates" in statement else None
        ),
    )
    send = {"recipients": ["ada"], "category": "orders", "template": "late", "data": {}}
    with TestClient(create_app(runtime=rt)) as api:
        assert api.post(SEND, json=send, headers=producer).status_code == 422
        template_store.save_version(  # saved by another process: this one does not know yet
            sessions=make_runtime().sessions,
            key="late",
            channel="*",
            locale="en",
            subject="Late",
            html=None,
            text=None,
            active=True,
            created_by="another process",
        )
        for _ in range(5):
            assert api.post(SEND, json=send, headers=producer).status_code == 422
        assert len(queries) == 1
        now[0] += 3600  # the cache expires
        assert api.post(SEND, json=send, headers=producer).status_code == 202
        assert api.post(SEND, json=send, headers=producer).status_code == 202
        assert len(queries) == 2


def inbox_titles(client, user, sid) -> list[tuple[str, str | None]]:
    items = client.get("/v1/me/notifications", headers=user(sid)).json()["items"]
    return [(n["title"], n["body"]) for n in items]


def test_each_recipient_reads_the_notification_in_their_language(
    client, runtime, admin, producer, user
):
    saved(client, admin)
    saved(
        client,
        admin,
        locale="ru",
        subject="Заказ {{ order }} отправлен",
        text="Доставка: {{ eta }}.",
    )
    profile(client, producer, "ivan", locale="ru-RU")
    profile(client, producer, "ada", locale="en-GB")
    send = {
        "recipients": ["ivan", "ada", "nobody-known"],
        "category": "orders",
        "template": "order_shipped",
        "data": ORDER,
    }
    assert client.post(SEND, json=send, headers=producer).status_code == 202
    drain(runtime.celery)

    assert inbox_titles(client, user, "ivan") == [("Заказ A-17 отправлен", "Доставка: <tomorrow>.")]
    assert inbox_titles(client, user, "ada") == [("Order A-17 shipped", "It arrives <tomorrow>.")]
    assert inbox_titles(client, user, "nobody-known") == [
        ("Order A-17 shipped", "It arrives <tomorrow>.")
    ]
    with runtime.sessions() as s:
        rows = s.scalars(select(Notification)).all()
    assert {(r.template, str(r.template_data["order"])) for r in rows} == {
        ("order_shipped", "A-17")
    }


# -- email and push --------------------------------------------------------------------------
@pytest.fixture
def mail_rt(make_runtime, smtp_server):
    return make_runtime(**FAST_RETRY, **smtp_server.settings())


@pytest.fixture
def mail_api(mail_rt):
    with TestClient(create_app(runtime=mail_rt), raise_server_exceptions=False) as c:
        yield c


def test_an_email_by_template_reaches_a_russian_reader_in_russian(mail_rt, mail_api, smtp_server):
    admin = {"Authorization": f"Bearer {make_key(mail_rt, 'admin')}"}
    producer = {"Authorization": f"Bearer {make_key(mail_rt, 'notify')}"}
    saved(mail_api, admin, html="<p>Arrives <b>{{ eta }}</b></p>")
    saved(
        mail_api,
        admin,
        locale="ru",
        subject="Заказ {{ order }} отправлен",
        text="Доставка: {{ eta }}.",
        html="<p>Доставка <b>{{ eta }}</b></p>",
    )
    profile(mail_api, producer, "ivan", locale="ru", email="ivan@example.com", name="Иван")
    profile(mail_api, producer, "ada", email="ada@example.com")
    send = {
        "recipients": ["ivan", "ada"],
        "category": "orders",
        "channels": ["email"],
        "template": "order_shipped",
        "data": ORDER,
    }
    assert mail_api.post(SEND, json=send, headers=producer).status_code == 202
    drain(mail_rt.celery)

    mails = {m.recipients[0]: m.message for m in smtp_server.messages}
    ru, en = mails["ivan@example.com"], mails["ada@example.com"]
    assert ru["Subject"] == "Заказ A-17 отправлен" and en["Subject"] == "Order A-17 shipped"
    html = ru.get_body(("html",)).get_content()
    text = ru.get_body(("plain",)).get_content()
    assert "<p>Доставка <b>&lt;tomorrow&gt;</b></p>" in html and 'lang="ru"' in html
    assert "Отписаться от писем категории «orders»" in html
    assert "Доставка: <tomorrow>." in text and "Отписаться от писем категории «orders»:" in text
    assert ru["List-Unsubscribe"].startswith("<http")
    en_html = en.get_body(("html",)).get_content()
    assert "<p>Arrives <b>&lt;tomorrow&gt;</b></p>" in en_html
    assert "Unsubscribe from orders emails" in en_html


def test_a_template_that_fails_for_one_locale_falls_back_in_the_inbox_and_dead_letters_email(
    mail_rt, mail_api, smtp_server
):
    admin = {"Authorization": f"Bearer {make_key(mail_rt, 'admin')}"}
    producer = {"Authorization": f"Bearer {make_key(mail_rt, 'notify')}"}
    saved(mail_api, admin)
    # The Russian version needs a variable the producer does not send. The API checks the
    # default locale only, so the request is accepted.
    saved(mail_api, admin, locale="ru", subject="Заказ {{ order }}", text="{{ courier }}")
    profile(mail_api, producer, "ivan", locale="ru", email="ivan@example.com")
    send = {
        "recipients": ["ivan"],
        "category": "orders",
        "channels": ["in_app", "email"],
        "template": "order_shipped",
        "data": ORDER,
    }
    assert mail_api.post(SEND, json=send, headers=producer).status_code == 202
    drain(mail_rt.celery)

    with mail_rt.sessions() as s:
        row = s.scalars(select(Notification)).one()
        email = s.scalars(select(Delivery).where(Delivery.channel == "email")).one()
        letter = s.scalars(select(DeadLetter)).one()
    assert (row.title, row.body) == ("Order A-17 shipped", "It arrives <tomorrow>.")
    assert email.status == "dead" and email.attempts == 1
    assert "'courier' is undefined" in email.last_error and "text" in email.last_error
    assert letter.delivery_id == email.id
    assert smtp_server.messages == []


def test_a_push_by_template_carries_the_channel_version_in_the_readers_language(
    make_runtime, push_service, user
):
    rt = make_runtime(**push_service.settings, **FAST_RETRY)
    admin = {"Authorization": f"Bearer {make_key(rt, 'admin')}"}
    producer = {"Authorization": f"Bearer {make_key(rt, 'notify')}"}
    with TestClient(create_app(runtime=rt)) as api:
        browser = push_service.subscribe()
        assert (
            api.post(
                "/v1/me/push-subscriptions", json=browser.json(), headers=user("ivan")
            ).status_code
            == 201
        )
        profile(api, producer, "ivan", locale="ru-RU")
        saved(api, admin)
        saved(
            api,
            admin,
            locale="ru",
            channel="push",
            subject="📦 {{ order }}",
            text="Курьер привезёт заказ {{ eta }}",
        )
        send = {
            "recipients": ["ivan"],
            "category": "orders",
            "channels": ["push"],
            "template": "order_shipped",
            "data": ORDER,
            "url": "https://shop.example/A-17",
        }
        assert api.post(SEND, json=send, headers=producer).status_code == 202
        drain(rt.celery)

    [got] = push_service.received(browser)
    assert got.payload["title"] == "📦 A-17"
    assert got.payload["body"] == "Курьер привезёт заказ <tomorrow>"
    assert got.payload["url"] == "https://shop.example/A-17"


def test_a_webhook_by_template_carries_the_rendering_for_the_recipients_locale(
    client, runtime, admin, producer, webhook_receiver
):
    saved(client, admin)
    saved(client, admin, locale="ru", subject="Заказ {{ order }} отправлен", text="{{ eta }}")
    url = webhook_receiver.url("orders")
    endpoint = client.post("/v1/webhooks", json={"url": url}, headers=admin).json()
    webhook_receiver.trust(url, endpoint["secret"])
    profile(client, producer, "ivan", locale="ru")
    send = {
        "recipients": ["ivan"],
        "category": "orders",
        "channels": ["in_app", "webhook"],
        "template": "order_shipped",
        "data": ORDER,
    }
    assert client.post(SEND, json=send, headers=producer).status_code == 202
    drain(runtime.celery)

    [got] = webhook_receiver.deliveries
    data = got.json["data"]
    assert data["title"] == "Заказ A-17 отправлен"  # the inbox row, in ivan's language
    assert data["content"] == {
        "subject": "Заказ A-17 отправлен",
        "html": None,
        "text": "<tomorrow>",
    }
