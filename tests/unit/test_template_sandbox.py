"""The template sandbox and the built-in templates, without a database: escape attempts
refused, errors that say where, locale fallback, and every built-in rendering in English
and Russian with the data its rule sends."""

from __future__ import annotations

import pytest

from clarion.core.sandbox import MAX_ITERATIONS, TemplateError, check, number, plural, safe_url
from clarion.core.templates import (
    TemplateVersion,
    builtins,
    pick,
    render,
)
from clarion.engine.packs import activities, insight, lifecycle, system
from clarion.locales import canonical_locale, locale_chain

# Reach Python from a template: each must be refused when saved, by the save-time scan.
SAVE_REFUSED = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ x.__globals__ }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ ()['__class__'] }}",
    "{{ range.__class__ }}",
    "{{ x.mro() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{% include '/etc/passwd' %}",
    "{% extends 'base.html' %}",
    "{% import 'os' as os %}",
    "{{ x|clarion_loop_budget }}",
    "{% if x.__class__ is defined %}yes{% endif %}",
]
# Built at render time from strings, so no scan can see them: the sandbox refuses them.
RENDER_REFUSED = [
    "{{ ''['__cla' ~ 'ss__'] }}",
    "{{ x|attr(name) }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(x) }}",
    "{{ items.pop() }}",
    "{{ items.append(1) }}",
    "{{ 'x' * 1000000 }}",
    "{{ [0] * 1000000 }}",
    "{{ 9 ** 99 ** 99 }}",
    "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
    "{% for a in items %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
]
DATA = {"x": "text", "name": "__class__", "items": [1, 2, 3]}
SAVE_TRIAL_REFUSED = {
    "{{ ''['__cla' ~ 'ss__'] }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(x) }}",
    "{{ 'x' * 1000000 }}",
    "{{ [0] * 1000000 }}",
    "{{ 9 ** 99 ** 99 }}",
    "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
}


@pytest.mark.parametrize("source", SAVE_REFUSED)
@pytest.mark.parametrize("field", ["subject", "html", "text"])
def test_escape_attempts_are_refused_at_save_with_the_field_and_line(field, source):
    with pytest.raises(TemplateError) as caught:
        check(field, "first line\n" + source)
    assert caught.value.kind == "unsafe"
    assert (caught.value.field, caught.value.line) == (field, 2)


@pytest.mark.parametrize("source", RENDER_REFUSED)
def test_escape_attempts_built_at_render_time_fail_safely(source):
    try:
        check("text", source)  # nothing in the source gives it away…
    except TemplateError as exc:
        # …but a trial render without data refuses at save what needs no data.
        assert exc.kind == "unsafe" and source in SAVE_TRIAL_REFUSED
    else:
        assert source not in SAVE_TRIAL_REFUSED
    version = TemplateVersion(
        key="k", channel="*", locale="en", subject="s", html=None, text=source
    )
    with pytest.raises(TemplateError) as caught:
        render(version, DATA)
    assert caught.value.kind == "unsafe" and caught.value.field == "text"
    assert "Traceback" not in str(caught.value)


def test_an_escape_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    for source in (
        f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}",
        f"{{{{ ''['__cla' ~ 'ss__'].__mro__[1].__subclasses__() }}}}{marker}",
    ):
        version = TemplateVersion(
            key="k", channel="*", locale="en", subject=source, html=None, text=None
        )
        with pytest.raises(TemplateError):
            render(version, {})
    assert not marker.exists()


def test_a_loop_budget_bounds_a_render_however_the_loops_nest():
    source = "{% for a in items %}{% for b in items %}.{% endfor %}{% endfor %}"
    version = TemplateVersion(
        key="k", channel="*", locale="en", subject=None, html=None, text=source
    )
    small = render(version, {"items": list(range(99))}).text
    assert small == "." * 99 * 99  # 99 + 99² iterations: within MAX_ITERATIONS
    with pytest.raises(TemplateError, match=f"more than {MAX_ITERATIONS}"):
        render(version, {"items": list(range(100))})  # 100 + 100² iterations


def test_a_missing_variable_names_the_variable_field_and_line():
    version = TemplateVersion(
        key="k",
        channel="*",
        locale="en",
        subject="Hi {{ name }}",
        html="<p>\n{{ order.total }}</p>",
        text=None,
    )
    with pytest.raises(TemplateError) as caught:
        render(version, {"order": {"id": 1}, "name": "Ada"})
    err = caught.value
    assert (err.kind, err.field, err.line, err.variable) == ("undefined", "html", 2, "total")
    with pytest.raises(TemplateError) as caught:
        render(version, {"order": {"total": 3}})
    assert (caught.value.field, caught.value.variable) == ("subject", "name")


def test_a_syntax_error_names_the_field_and_line():
    with pytest.raises(TemplateError) as caught:
        check("text", "one\ntwo\n{% if x %}never closed")
    assert (caught.value.kind, caught.value.field, caught.value.line) == ("syntax", "text", 3)


def test_html_is_autoescaped_and_text_and_subject_are_not():
    version = TemplateVersion(
        key="k", channel="*", locale="en", subject="{{ v }}", html="<b>{{ v }}</b>", text="{{ v }}"
    )
    out = render(version, {"v": "<script>&"})
    assert out.html == "<b>&lt;script&gt;&amp;</b>"
    assert out.subject == out.text == "<script>&"


def test_a_subject_is_one_line():
    version = TemplateVersion(
        key="k", channel="*", locale="en", subject="{{ v }}", html=None, text=None
    )
    assert render(version, {"v": "  padded  "}).subject == "padded"
    with pytest.raises(TemplateError, match="one line") as caught:
        render(version, {"v": "two\nlines"})
    assert caught.value.field == "subject"


@pytest.mark.parametrize(
    ("n", "en", "ru"),
    [
        (1, "item", "уведомление"),
        (2, "items", "уведомления"),
        (5, "items", "уведомлений"),
        (11, "items", "уведомлений"),
        (21, "items", "уведомление"),
        (22, "items", "уведомления"),
        (112, "items", "уведомлений"),
        (0, "items", "уведомлений"),
    ],
)
def test_plural_picks_english_and_russian_forms(n, en, ru):
    assert plural(n, "item", "items") == en
    assert plural(n, "уведомление", "уведомления", "уведомлений") == ru


def test_number_and_safe_url_filters():
    assert number(0.256, ".1%") == "25.6%" and number(3.0) == "3" and number(1234, ",d") == "1,234"
    with pytest.raises(ValueError):
        number(1, "{0.__class__}")
    assert safe_url("https://a.example/x") == "https://a.example/x"
    assert safe_url("javascript:alert(1)") is None and safe_url(None) is None


def test_locale_chain_goes_from_region_to_language_to_the_default():
    assert locale_chain("ru-RU", "en") == ["ru-RU", "ru", "en"]
    assert locale_chain("ru_ru", "en") == ["ru-RU", "ru", "en"]
    assert locale_chain(None, "en-GB") == ["en-GB", "en"]
    assert locale_chain("zh-hant-tw", "en") == ["zh-Hant-TW", "zh-Hant", "zh", "en"]
    assert canonical_locale("EN") == "en"


def _v(channel: str, locale: str, subject: str) -> TemplateVersion:
    return TemplateVersion(
        key="k", channel=channel, locale=locale, subject=subject, html=None, text=None, id=1
    )


def test_pick_prefers_the_locale_then_the_channel_then_stored_over_built_in():
    stored = {
        ("k", "*", "en"): _v("*", "en", "en any"),
        ("k", "*", "ru"): _v("*", "ru", "ru any"),
        ("k", "email", "ru"): _v("email", "ru", "ru email"),
    }
    assert pick(stored, "k", "email", "ru-RU", "en").subject == "ru email"
    assert pick(stored, "k", "push", "ru-RU", "en").subject == "ru any"
    assert pick(stored, "k", "email", "de", "en").subject == "en any"
    assert pick(stored, "nope", "email", "ru", "en") is None
    # A stored English digest hides the built-in English one, not the Russian one.
    mine = {("digest", "*", "en"): _v("*", "en", "mine")}
    assert pick(mine, "digest", "email", "en", "en").subject == "mine"
    assert pick(mine, "digest", "email", "ru", "en").builtin


# -- built-ins ----------------------------------------------------------------------------
WHEN = {"date": "2026-11-25", "start": "13:00", "end": "14:00", "days": 0}
LINK = {"link": {"id": 7, "label": "https://go.example/l7"}, "expires": "2026-03-01 14:00 UTC"}
CAMPAIGN = {"campaign": {"id": 3, "name": "Spring", "ends": "2026-03-11 12:00 UTC"}}
SAMPLES = {
    "link_expiring_soon": LINK,
    "link_expired": {"link": {"id": 7, "label": None}, "expires": "2026-03-01 14:00 UTC"},
    "expired_link_has_active_campaign": {**LINK, **CAMPAIGN},
    "active_link_has_expired_campaign": {**LINK, "expires": None, **CAMPAIGN},
    "campaign_expiring_soon": CAMPAIGN,
    "campaign_expired": {"campaign": {"id": 3, "name": None, "ends": "2026-03-11 12:00 UTC"}},
    "campaign_has_expired_links": {**CAMPAIGN, "count": 2, "first": "a", "last": "b"},
    "queue_backlog": {"queue": "create", "waiting": 6, "threshold": 5},
    "queue_delay": {
        "queue": "create",
        "stuck": True,
        "waiting": 61.2,
        "last_delay": None,
        "threshold": 60.0,
    },
    "dead_letter_growth": {
        "channel": "webhook",
        "count": 4,
        "window_minutes": 15.0,
        "threshold": 3,
    },
    "delivery_failure_rate": {
        "channel": "push",
        "failed": 5,
        "attempts": 20,
        "rate": 0.25,
        "window_minutes": 10.0,
        "threshold": 0.2,
        "min_attempts": 20,
    },
    "no_worker": {"timeout_seconds": 2.0},
    "high_load": {"host": "h1", "load": 9.5, "cores": 2, "per_core": 4.75, "threshold": 2.0},
    "traffic_spike": {
        "subject": "l1",
        "window": WHEN,
        "observed": 300,
        "median": 102.5,
        "history": [100.0, 110.0, 95.0, 105.0],
        "z": 12.3,
        "threshold": 4.5,
        "unit": "week",
    },
    "traffic_drop": {
        "subject": "l1",
        "window": {**WHEN, "days": 1},
        "observed": 10,
        "median": 100.0,
        "history": [100.0, 90.0, 110.0],
        "z": -8.0,
        "threshold": 4.5,
        "unit": None,
    },
    "new_country_discovered": {
        "subject": "l1",
        "window": WHEN,
        "countries": [{"code": c, "visits": 2} for c in "ABCDEFG"],
        "baseline_days": 30.0,
        "baseline_visits": 80,
        "other_countries": 3,
    },
    "unusual_device_distribution": {
        "subject": "l1",
        "window": {**WHEN, "days": 7},
        "visits": 200,
        "devices": [{"device": "mobile", "share": 0.9, "usual": 0.6}],
        "score": 0.12,
        "threshold": 0.05,
        "total_variation": 0.3,
    },
    "conversion_rate_anomaly": {
        "subject": "l1",
        "window": WHEN,
        "conversions": 10,
        "visits": 200,
        "rate": 0.05,
        "baseline_conversions": 100,
        "baseline_visits": 1000,
        "baseline_rate": 0.1,
        "baseline_days": 28.0,
        "z": -3.5,
        "threshold": 3.0,
    },
    "member_invited": {"workspace": None, "actor": None, "invitee": "zed", "role": None},
    "member_invited.admins": {
        "workspace": "Acme",
        "actor": "ada",
        "invitee": "zed",
        "role": "editor",
    },
    "new_signup": {"who": "Eve", "details": "eve@example.test", "workspace": "ws-7"},
    "integration_connected": {"name": "Slack", "actor": None},
    "integration_failing": {"name": "Slack", "error": "401"},
    "clarion.test": {},
    "digest": {
        "category": "links",
        "cadence": "daily",
        "count": 3,
        "items": [
            {
                "title": f"Item {i} <b>",
                "body": "line\nnext" if i else None,
                "url": "https://app.example/i" if i != 1 else "javascript:alert(1)",
                "created_at": f"2026-03-0{i + 1}T14:00:00+00:00",
            }
            for i in range(3)
        ],
    },
}


def test_every_rule_of_the_packs_and_the_digest_ships_in_english_and_russian():
    rules = {r.key for pack in (lifecycle, system, insight, activities) for r in pack.RULES}
    # new_signup.signup words its notification with new_signup's template.
    # clarion.test: the settings page's test notification (clarion.core.trial).
    expected = (rules - {"new_signup.signup"}) | {"member_invited.admins", "digest", "clarion.test"}
    shipped = builtins()
    for locale in ("en", "ru"):
        assert {k for k, _, loc in shipped if loc == locale} == expected
    assert {(k, c) for k, c, loc in shipped if loc == "en"} == {
        (k, c) for k, c, loc in shipped if loc == "ru"
    }
    assert set(SAMPLES) == expected


@pytest.mark.parametrize(("key", "channel", "locale"), sorted(builtins()))
def test_every_built_in_renders_with_its_documented_data(key, channel, locale):
    version = builtins()[key, channel, locale]
    out = render(version, SAMPLES[key])
    assert out.subject and "\n" not in out.subject
    assert out.text and "{{" not in out.text and "{%" not in (out.html or "")
    cyrillic = any("а" <= ch.lower() <= "я" for ch in out.subject + out.text)
    assert cyrillic == (locale == "ru"), (out.subject, out.text)


@pytest.mark.parametrize(
    ("locale", "subject", "cadence"),
    [
        ("en", "3 new notifications in links", "Your daily digest"),
        ("ru", "3 новых уведомления: links", "Ежедневная сводка"),
    ],
)
def test_the_digest_lists_every_item_with_its_link(locale, subject, cadence):
    out = render(builtins()["digest", "*", locale], SAMPLES["digest"])
    assert out.subject == subject
    assert cadence in out.html and cadence in out.text
    for i in range(3):
        assert f"Item {i} &lt;b&gt;" in out.html and f"Item {i} <b>" in out.text
    assert out.html.count('href="https://app.example/i"') == 2
    assert "javascript:" not in out.html and "javascript:" not in out.text
    one = render(builtins()["digest", "*", locale], {**SAMPLES["digest"], "count": 1})
    assert (
        one.subject
        == {"en": "1 new notification in links", "ru": "1 новое уведомление: links"}[locale]
    )
    push = render(builtins()["digest", "push", locale], SAMPLES["digest"])
    assert push.text == "Item 0 <b> · Item 1 <b> · Item 2 <b>" and push.html is None
