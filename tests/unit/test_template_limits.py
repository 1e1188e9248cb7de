"""Every way a template can build a large string or list is refused before it is built.

Each payload below would build hundreds of megabytes (or more) if it ran unbounded; each
must fail as ``unsafe`` while the render's peak memory stays a few megabytes. They are
fed their sizes through the data, so neither Jinja's constant folding nor the save-time
trial render hides the render-time bound being tested.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest

from clarion.core.sandbox import TemplateError, check, render_field
from clarion.core.template_limits import MAX_BUILD, MAX_CALLS

BIG = 50_000_000
PAYLOADS = {
    # filters
    "center": "{{ (x|center(n))|length }}",
    "format width": "{{ ('%' ~ n ~ 's')|format(x) }}",
    "format precision": "{{ ('%.' ~ n ~ 'f')|format(1.5) }}",
    "indent": "{{ (lines|indent(k))|length }}",
    "join": "{{ (rows|join)|length }}",
    "join attribute": "{{ (people|join(',', attribute='name'))|length }}",
    "replace": "{{ (long|replace('a', long))|length }}",
    "wordwrap": "{{ (long|wordwrap(1, wrapstring=long))|length }}",
    "map": "{{ (rows|map('upper')|list)|length }}",
    "batch": "{{ ([1]|batch(n, 0)|list)|length }}",
    "slice": "{{ ([1]|slice(n)|list)|length }}",
    "sum": "{{ (lists|sum(start=[]))|length }}",
    "string": "{{ (rows|string)|length }}",
    "tojson": "{{ (rows|tojson)|length }}",
    "tojson indent": "{{ ([1, 2, 3]|tojson(indent=n))|length }}",
    "pprint": "{{ (rows|pprint)|length }}",
    "escape": "{{ (rows|e)|length }}",
    "urlencode": "{{ (rows|urlencode)|length }}",
    "urlize": "{{ (urls|urlize(target=long))|length }}",
    "xmlattr": "{{ ({'a': rows}|xmlattr)|length }}",
    # methods
    "str.center": "{{ x.center(n)|length }}",
    "str.ljust": "{{ x.ljust(n)|length }}",
    "str.rjust": "{{ x.rjust(n)|length }}",
    "str.zfill": "{{ x.zfill(n)|length }}",
    "str.expandtabs": "{{ tabs.expandtabs(k)|length }}",
    "str.join": "{{ x.join(rows)|length }}",
    "str.replace": "{{ long.replace('a', long)|length }}",
    "str.translate": "{{ long.translate({97: long})|length }}",
    "str.format": "{{ ('{:' ~ n ~ '}').format(x)|length }}",
    "str.format repeated": "{{ ('{0}' * 3000).format(long)|length }}",
    "str.format_map": "{{ ('{a:' ~ n ~ '}').format_map({'a': x})|length }}",
    "int.to_bytes": "{{ (1).to_bytes(n, 'big')|length }}",
    "dict.fromkeys": "{{ ({}.fromkeys(range(100000), long)|string)|length }}",
    # operators
    "%": "{{ (('%' ~ n ~ 's') % x)|length }}",
    "% precision": "{{ (('%.' ~ n ~ 'f') % 1.5)|length }}",
    "% of a list": "{{ ('%s' % [rows])|length }}",
    "+ doubling": "{% set s = long %}" + "{% set s = s + s %}" * 20 + "{{ s|length }}",
    "~ doubling": "{% set s = long %}" + "{% set s = s ~ s %}" * 20 + "{{ s|length }}",
    "* of integers": "{% set x = 2 ** 64 %}" + "{% set x = x * x %}" * 30 + "{{ x > 1 }}",
    "reversed copies kept": "".join(f"{{% set c{i} = long[::-1] %}}" for i in range(2000)),
    "a list printed whole": "{{ rows }}",
    # captured output
    "set block": "{% set b %}{% for i in range(10000) %}{{ long }}{% endfor %}{% endset %}"
    "{{ b|length }}",
    "macro": "{% macro m() %}{% for i in range(10000) %}{{ long }}{% endfor %}{% endmacro %}"
    "{{ m()|length }}",
    "filter block": "{% filter length %}{% for i in range(10000) %}{{ long }}{% endfor %}"
    "{% endfilter %}",
    "call block": "{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}"
    "{% for i in range(10000) %}{{ long }}{% endfor %}{% endcall %}",
}
LONG = "a" * 10_000
DATA = {
    "x": "a",
    "n": BIG,
    "k": 100_000,
    "long": LONG,
    "lines": "a\n" * 5_000,
    "tabs": "\t" * 10_000,
    "rows": [LONG] * 10_000,
    "people": [{"name": LONG}] * 10_000,
    "lists": [[1] * 100] * 10_000,
    "urls": "a.com " * 5_000,
}


@pytest.mark.parametrize("source", PAYLOADS.values(), ids=PAYLOADS.keys())
@pytest.mark.parametrize("field", ["text", "html"])
def test_a_payload_is_refused_before_it_is_built(field, source):
    try:
        check(field, source)  # most need their data to do harm, so they can be saved
    except TemplateError as exc:
        assert exc.kind == "unsafe"
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as caught:
            render_field(field, source, DATA)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.kind == "unsafe", caught.value
    assert peak < 24 * 1024 * 1024, f"{peak / 2**20:.0f} MiB"


def test_recursion_that_builds_nothing_still_ends_soon():
    source = (
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
        "{{ m(depth) }}"
    )
    started = time.monotonic()
    with pytest.raises(TemplateError, match=f"more than {MAX_CALLS} calls"):
        render_field("text", source, {"depth": 40})  # 2**40 calls unbounded
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "source",
    [
        "{{ ('a'|center(50000000))|length }}",  # the report's 36 characters
        "{{ 'a'.center(50000000) }}",
        "{{ '%50000000s' % 'a' }}",
        "{{ ('a' * 10000) ~ ('a' * 10000) ~ ('a' * 10000) }}" * 10,
        "{{ [1]|batch(50000000, 0)|list|length }}",
    ],
)
def test_what_builds_too_much_whatever_the_data_is_refused_at_save(source):
    with pytest.raises(TemplateError) as caught:
        check("text", source)
    assert caught.value.kind == "unsafe"


def test_ordinary_templates_stay_well_within_the_budget():
    data = {
        "items": [{"name": f"item {i}", "price": i * 1.5} for i in range(2_000)],
        "note": "x" * 100_000,
    }
    source = (
        "{% for item in items %}{{ loop.index }}. {{ item.name|title|center(20) }}"
        " {{ '%.2f'|format(item.price) }} {{ '{:>8}'.format(item.name) }}\n{% endfor %}"
        "{{ items|map(attribute='name')|join(', ')|truncate(100) }}"
        "{{ note|truncate(50) }} {{ note|wordwrap(60)|length }}"
        "{{ items|sum(attribute='price') }}"
    )
    rendered = render_field("text", source, data)
    assert rendered.startswith("1. ") and len(rendered) < MAX_BUILD
