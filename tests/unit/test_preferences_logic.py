"""The routing decisions preferences drive, as pure functions of the stored choices and now."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clarion.core import preferences as prefs
from clarion.core import wallclock
from clarion.core.preferences import Digest, Policy, Prefs


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def decide(policy=None, stored=prefs.EMPTY, *, now=None, **notice):
    values = {"category": "links", "severity": "medium", "type_": None, "requested": None}
    values.update(notice)
    made = prefs.plan(policy or Policy(), stored, now=now or utc(2025, 6, 2, 12), **values)
    return {d.channel: (d.action, d.reason) for d in made.decisions}, made.in_inbox


CAMPAIGNS = Policy(
    category_channels={"campaigns": ["in_app", "email"], "system": ["in_app"]},
    required=frozenset({"security"}),
    category_digest={"weekly-news": "weekly"},
)


# -- quiet hours ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (utc(2025, 6, 2, 23, 30), utc(2025, 6, 3, 7)),  # after the start, before midnight
        (utc(2025, 6, 3, 3, 0), utc(2025, 6, 3, 7)),  # after midnight
        (utc(2025, 6, 2, 22, 0), utc(2025, 6, 3, 7)),  # the start is inside
        (utc(2025, 6, 3, 7, 0), None),  # the end is outside
        (utc(2025, 6, 2, 12, 0), None),
    ],
)
def test_a_window_across_midnight(now, until):
    assert wallclock.quiet_until("22:00", "07:00", None, now) == until


def test_a_window_within_one_day_and_no_window():
    assert wallclock.quiet_until("09:00", "17:00", "UTC", utc(2025, 6, 2, 8, 59)) is None
    assert wallclock.quiet_until("09:00", "17:00", "UTC", utc(2025, 6, 2, 9)) == utc(2025, 6, 2, 17)
    assert wallclock.quiet_until(None, None, "UTC", utc(2025, 6, 2, 3)) is None
    assert wallclock.quiet_until("07:00", "07:00", "UTC", utc(2025, 6, 2, 7)) is None


@pytest.mark.parametrize(
    ("zone", "now", "until"),
    [
        # Berlin springs forward on 30 March 2025 (CET +1 → CEST +2): 07:00 is 05:00 UTC,
        # not the 06:00 UTC that "start + 9 hours" would give.
        ("Europe/Berlin", utc(2025, 3, 29, 22, 30), utc(2025, 3, 30, 5)),
        # ... and falls back on 26 October (CEST → CET): 07:00 is 06:00 UTC.
        ("Europe/Berlin", utc(2025, 10, 25, 21), utc(2025, 10, 26, 6)),
        # New York: 9 March 2025 (EST -5 → EDT -4) and 2 November (EDT → EST).
        ("America/New_York", utc(2025, 3, 9, 4), utc(2025, 3, 9, 11)),
        ("America/New_York", utc(2025, 3, 9, 7, 30), utc(2025, 3, 9, 11)),
        ("America/New_York", utc(2025, 11, 2, 3), utc(2025, 11, 2, 12)),
        ("America/New_York", utc(2025, 11, 2, 6, 30), utc(2025, 11, 2, 12)),
    ],
)
def test_quiet_hours_across_a_dst_change_end_at_the_wall_clock_time(zone, now, until):
    assert wallclock.quiet_until("22:00", "07:00", zone, now) == until


def test_an_end_the_clock_skips_is_the_moment_it_jumps_past_it():
    # Berlin, 30 March 2025: 02:00 CET (01:00 UTC) becomes 03:00 CEST; 02:30 never shows.
    now = utc(2025, 3, 30, 0, 30)  # 01:30 CET
    assert wallclock.quiet_until("01:00", "02:30", "Europe/Berlin", now) == utc(2025, 3, 30, 1)
    assert wallclock.quiet_until("01:00", "02:30", "Europe/Berlin", utc(2025, 3, 30, 1)) is None


def test_an_end_the_clock_shows_twice_ends_at_the_next_showing():
    # Berlin, 26 October 2025: 02:00–03:00 happens twice (00:00–01:00 UTC, then 01:00–02:00).
    zone = "Europe/Berlin"
    assert wallclock.quiet_until("00:00", "02:30", zone, utc(2025, 10, 25, 23)) == utc(
        2025, 10, 26, 0, 30
    )
    # 02:10 on the second pass: still before 02:30 on the clock, which shows it again at 01:30.
    assert wallclock.quiet_until("00:00", "02:30", zone, utc(2025, 10, 26, 1, 10)) == utc(
        2025, 10, 26, 1, 30
    )


# -- digest periods ------------------------------------------------------------------


def test_hourly_ends_at_the_next_top_of_the_hour_on_the_subscribers_clock():
    assert wallclock.next_digest_at("hourly", None, None, None, utc(2025, 6, 2, 10, 15)) == utc(
        2025, 6, 2, 11
    )
    assert wallclock.next_digest_at("hourly", None, None, "UTC", utc(2025, 6, 2, 10)) == utc(
        2025, 6, 2, 11
    )
    # India is UTC+05:30: its hours turn at half past the UTC hour.
    assert wallclock.next_digest_at(
        "hourly", None, None, "Asia/Kolkata", utc(2025, 6, 2, 10, 15)
    ) == (utc(2025, 6, 2, 10, 30))


def test_daily_is_the_next_occurrence_of_its_time_in_the_zone():
    berlin = "Europe/Berlin"
    # 09:00 by default; before it today → today (CET), after it → tomorrow, now CEST.
    assert wallclock.next_digest_at("daily", None, None, berlin, utc(2025, 3, 29, 7)) == utc(
        2025, 3, 29, 8
    )
    assert wallclock.next_digest_at("daily", None, None, berlin, utc(2025, 3, 29, 8)) == utc(
        2025, 3, 30, 7
    )
    assert wallclock.next_digest_at("daily", "18:30", None, "UTC", utc(2025, 6, 2, 19)) == utc(
        2025, 6, 3, 18, 30
    )
    # 02:30 does not exist in Berlin on 30 March 2025: the clock jumps past it at 01:00 UTC.
    assert wallclock.next_digest_at("daily", "02:30", None, berlin, utc(2025, 3, 29, 12)) == utc(
        2025, 3, 30, 1
    )


def test_weekly_is_the_next_weekday_at_its_time():
    wednesday = utc(2025, 1, 1, 12)
    assert wallclock.next_digest_at("weekly", None, None, None, wednesday) == utc(2025, 1, 6, 9)
    # Later the same weekday, or a week on once its time has passed.
    assert wallclock.next_digest_at("weekly", "17:00", 2, None, wednesday) == utc(2025, 1, 1, 17)
    assert wallclock.next_digest_at("weekly", "08:00", 2, None, wednesday) == utc(2025, 1, 8, 8)
    monday_nine = utc(2025, 1, 6, 9)
    assert wallclock.next_digest_at("weekly", "09:00", 0, None, monday_nine) == utc(2025, 1, 13, 9)


def test_instant_has_no_period():
    with pytest.raises(ValueError, match="no digest period"):
        wallclock.next_digest_at("instant", None, None, None, utc(2025, 1, 1))


# -- the preference matrix -----------------------------------------------------------


def test_without_preferences_a_category_gets_its_defaults_and_the_inbox():
    assert decide(CAMPAIGNS, category="campaigns") == (
        {"in_app": ("deliver", None), "email": ("deliver", None)},
        True,
    )
    assert decide(CAMPAIGNS, category="system") == ({"in_app": ("deliver", None)}, True)
    # An unconfigured category gets default_channels (in_app).
    assert decide(CAMPAIGNS, category="other") == ({"in_app": ("deliver", None)}, True)


def test_global_off_and_category_off_skip_the_channel_as_opted_out():
    global_off = Prefs(switches={("*", "email"): False})
    assert decide(CAMPAIGNS, global_off, category="campaigns")[0]["email"] == (
        "skipped",
        "opted out",
    )
    category_off = Prefs(switches={("campaigns", "email"): False})
    assert decide(CAMPAIGNS, category_off, category="campaigns")[0]["email"] == (
        "skipped",
        "opted out",
    )
    # Off for campaigns only: other categories asking for email still get it.
    assert decide(CAMPAIGNS, category_off, category="links", requested=["email"])[0] == {
        "email": ("deliver", None)
    }


def test_global_off_wins_over_category_on():
    stored = Prefs(switches={("*", "push"): False, ("links", "push"): True})
    assert decide(CAMPAIGNS, stored, category="links")[0] == {
        "in_app": ("deliver", None),
        "push": ("skipped", "opted out"),
    }


def test_category_on_adds_a_channel_the_category_does_not_have_by_default():
    stored = Prefs(switches={("system", "push"): True, ("system", "email"): False})
    assert decide(CAMPAIGNS, stored, category="system")[0] == {
        "in_app": ("deliver", None),
        "push": ("deliver", None),
    }


def test_a_request_naming_channels_uses_exactly_those_still_subject_to_opt_outs():
    stored = Prefs(switches={("links", "push"): True, ("links", "email"): False})
    assert decide(CAMPAIGNS, stored, requested=["email", "webhook"]) == (
        {"email": ("skipped", "opted out"), "webhook": ("deliver", None)},
        False,
    )


def test_in_app_switched_off_keeps_it_out_of_the_inbox():
    stored = Prefs(switches={("links", "in_app"): False})
    decisions, in_inbox = decide(CAMPAIGNS, stored, requested=["in_app", "email"])
    assert decisions == {"in_app": ("skipped", "opted out"), "email": ("deliver", None)}
    assert in_inbox is False


def test_webhooks_are_not_subject_to_preferences():
    stored = Prefs(switches={("*", "webhook"): False}, quiet_start="00:00", quiet_end="23:59")
    assert decide(CAMPAIGNS, stored, requested=["webhook"])[0] == {"webhook": ("deliver", None)}


def test_required_categories_and_critical_severity_bypass_opt_outs_digests_and_quiet_hours():
    stored = Prefs(
        switches={("*", "email"): False, ("security", "in_app"): False},
        digests={"security": Digest("daily"), "campaigns": Digest("daily")},
        quiet_start="00:00",
        quiet_end="23:59",
    )
    policy = Policy(
        category_channels={"security": ["in_app", "email"], "campaigns": ["in_app", "email"]},
        required=frozenset({"security"}),
    )
    everything = ({"in_app": ("deliver", None), "email": ("deliver", None)}, True)
    assert decide(policy, stored, category="security") == everything
    assert decide(policy, stored, category="campaigns", severity="critical") == everything
    # The same subscriber's ordinary campaign is opted out of email.
    assert decide(policy, stored, category="campaigns")[0]["email"] == ("skipped", "opted out")


def test_quiet_hours_defer_email_and_push_with_the_reason_and_leave_the_inbox_alone():
    stored = Prefs(
        switches={("links", "push"): True},
        timezone="Europe/Berlin",
        quiet_start="22:00",
        quiet_end="07:00",
    )
    made = prefs.plan(
        CAMPAIGNS,
        stored,
        category="links",
        severity="high",
        type_=None,
        requested=None,
        now=utc(2025, 3, 29, 22, 30),
    )
    by = {d.channel: d for d in made.decisions}
    assert by["in_app"].action == "deliver" and made.in_inbox
    for channel in ("push",):
        assert by[channel].action == "deferred" and by[channel].until == utc(2025, 3, 30, 5)
        assert by[channel].reason == "deferred: quiet hours until 2025-03-30T05:00:00Z"
    outside = decide(CAMPAIGNS, stored, now=utc(2025, 3, 30, 12), requested=["email"])
    assert outside[0] == {"email": ("deliver", None)}


def test_a_digest_cadence_holds_email_and_push_until_the_period_ends():
    stored = Prefs(digests={"campaigns": Digest("daily", "08:00")}, timezone="Europe/Berlin")
    made = prefs.plan(
        CAMPAIGNS,
        stored,
        category="campaigns",
        severity="medium",
        type_="promo",
        requested=["in_app", "email", "push"],
        now=utc(2025, 6, 2, 12),
    )
    by = {d.channel: d for d in made.decisions}
    assert by["in_app"].action == "deliver"
    for channel in ("email", "push"):
        assert (by[channel].action, by[channel].reason) == ("held", "digest: daily")
        assert by[channel].until == utc(2025, 6, 3, 6)  # 08:00 CEST


def test_the_operators_default_cadence_applies_and_the_subscribers_own_wins():
    assert decide(CAMPAIGNS, category="weekly-news", requested=["email"])[0] == {
        "email": ("held", "digest: weekly")
    }
    instant = Prefs(digests={"weekly-news": Digest("instant")})
    assert decide(CAMPAIGNS, instant, category="weekly-news", requested=["email"])[0] == {
        "email": ("deliver", None)
    }


def test_a_digest_is_never_held_for_a_digest_but_does_respect_quiet_hours():
    stored = Prefs(digests={"links": Digest("hourly")}, quiet_start="22:00", quiet_end="07:00")
    decisions, _ = decide(
        CAMPAIGNS,
        stored,
        requested=["email"],
        type_=prefs.DIGEST_TYPE,
        now=utc(2025, 6, 2, 23),
    )
    assert decisions == {"email": ("deferred", "deferred: quiet hours until 2025-06-03T07:00:00Z")}
    # An ordinary one in the same window is held: the digest takes precedence.
    assert decide(CAMPAIGNS, stored, requested=["email"], now=utc(2025, 6, 2, 23))[0] == {
        "email": ("held", "digest: hourly")
    }


# -- what the API shows ---------------------------------------------------------------


def test_the_view_lists_every_known_category_with_locks_defaults_and_digests():
    stored = Prefs(
        switches={("*", "push"): False, ("billing", "push"): True, ("campaigns", "email"): False},
        digests={"campaigns": Digest("weekly", None, 4)},
        timezone="Europe/Berlin",
        quiet_start="22:00",
        quiet_end="07:00",
    )
    shown = prefs.view(CAMPAIGNS, stored)
    assert shown["timezone"] == "Europe/Berlin" and shown["critical_bypasses"] is True
    assert shown["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert shown["channels"]["push"] == {"enabled": False, "locked": False}
    assert shown["channels"]["email"] == {"enabled": True, "locked": False}
    assert list(shown["categories"]) == [
        "billing",
        "campaigns",
        "security",
        "system",
        "weekly-news",
    ]
    campaigns = shown["categories"]["campaigns"]
    assert campaigns["channels"]["email"] == {"enabled": False, "locked": False, "default": True}
    assert campaigns["digest"] == {"cadence": "weekly", "at": "09:00", "weekday": 4}
    security = shown["categories"]["security"]
    assert security["required"] is True
    assert all(t["locked"] for t in security["channels"].values())
    assert security["channels"]["in_app"]["enabled"] is True
    assert shown["categories"]["billing"]["channels"]["push"]["enabled"] is True
    assert shown["categories"]["weekly-news"]["digest"]["cadence"] == "weekly"
    assert prefs.view(Policy(), prefs.EMPTY)["quiet_hours"] is None


def test_changing_a_required_categorys_toggle_is_a_locked_change():
    policy = Policy(category_channels={"security": ["email"]}, required=frozenset({"security"}))
    assert prefs.locked_changes(
        policy,
        prefs.EMPTY,
        {"security": {"email": False, "in_app": True, "push": True}, "links": {"email": False}},
        {"security": Digest("daily"), "links": Digest("daily")},
    ) == [
        "categories.security.channels.email",
        "categories.security.channels.push",
        "categories.security.digest",
    ]
    # Repeating the current values (a GET echoed back) is not a change.
    assert prefs.locked_changes(policy, prefs.EMPTY, {"security": {"email": True}}, {}) == []


def test_stored_rows_assemble_into_prefs_per_subscriber():
    built = prefs.assemble(
        [("ada", "*", "email", False), ("ada", "links", "push", True)],
        [("bob", "links", "daily", "08:00", None)],
        [("ada", "Europe/Berlin", "22:00", "07:00")],
    )
    assert built["ada"] == Prefs(
        switches={("*", "email"): False, ("links", "push"): True},
        timezone="Europe/Berlin",
        quiet_start="22:00",
        quiet_end="07:00",
    )
    assert built["bob"].digests == {"links": Digest("daily", "08:00", None)}
    assert "carol" not in built


@pytest.mark.parametrize("bad", ["7:00", "24:00", "12:60", "noon", ""])
def test_times_of_day_are_hh_mm(bad):
    with pytest.raises(ValueError, match="HH:MM"):
        wallclock.parse_hhmm(bad)


def test_time_zones_must_be_known():
    assert wallclock.check_zone("America/New_York") == "America/New_York"
    for bad in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(ValueError, match="time zone"):
            wallclock.check_zone(bad)
