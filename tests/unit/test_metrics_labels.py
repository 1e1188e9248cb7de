"""Labels stay low-cardinality whatever producers and clients send."""

from __future__ import annotations

from prometheus_client import REGISTRY

from clarion import exposition, metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_categories_past_the_cap_are_counted_as_other(monkeypatch):
    monkeypatch.setattr(metrics, "_categories", set())
    monkeypatch.setattr(metrics, "MAX_CATEGORIES", 3)
    name = "clarion_notifications_created_total"
    before = sample(name, category="other", lane="normal")
    counts = {(f"cat-{i}", "normal"): 1 for i in range(5)}
    metrics.notifications_created(counts)
    assert sample(name, category="other", lane="normal") - before == 2
    assert sample(name, category="cat-0", lane="normal") >= 1
    assert sample(name, category="cat-4", lane="normal") == 0
    metrics.notifications_created({("cat-0", "normal"): 1})  # a known one keeps its label
    assert sample(name, category="other", lane="normal") - before == 2


def test_unknown_methods_share_one_label():
    name = "clarion_http_requests_total"
    before = sample(name, method="other", route="/healthz", status="405")
    metrics.http_request("BREW", "/healthz", 405, 0.001)
    metrics.http_request("PROPFIND", "/healthz", 405, 0.001)
    assert sample(name, method="other", route="/healthz", status="405") - before == 2
    assert sample(name, method="BREW", route="/healthz", status="405") == 0


def test_the_scrape_token_is_a_bearer_token_compared_in_full():
    assert exposition.authorized(None, None)
    assert exposition.authorized("s3cret", "Bearer s3cret")
    assert exposition.authorized("s3cret", "bearer s3cret")
    for header in (None, "", "Bearer", "Bearer s3cre", "Bearer s3cretX", "Basic s3cret"):
        assert not exposition.authorized("s3cret", header), header
