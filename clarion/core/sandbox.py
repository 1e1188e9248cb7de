"""Template sources compiled and rendered in Jinja2's sandbox.

Templates are written by operators (admin scope) and filled with data from producers, so
neither may reach Python: an ``ImmutableSandboxedEnvironment`` refuses ``_``-prefixed and
internal attributes and methods that modify data, ``StrictUndefined`` makes a missing
variable an error instead of an empty string, and the names SSTI payloads start from
(``cycler``, ``joiner``, ``namespace``, ``lipsum``) are not there. On top of Jinja's own
checks: a save-time scan that refuses the obvious payloads with the line they are on,
a save-time trial render with every variable undefined (what is unsafe whatever the data
is refused then), and bounds on what one render may cost, charged where a string or list
is built rather than after (:mod:`clarion.core.template_limits`): loop iterations, calls,
characters built, and the characters of each rendered field.

``html`` is autoescaped; ``subject`` and ``text`` are plain text and are not.
"""

from __future__ import annotations

import functools
import re
import traceback
from typing import Any
from urllib.parse import urlsplit

from jinja2 import ChainableUndefined, StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
    SecurityError,
)

from clarion.core import template_limits as limits
from clarion.core.template_limits import MAX_ITERATIONS
from clarion.templates import FIELDS

# What one render may cost besides template_limits' budgets: the length of a string or list
# made with ``*``, an exponent, and the characters of one rendered field.
MAX_REPEAT = 10_000
MAX_EXPONENT = 100
MAX_OUTPUT = 256 * 1024
# Names SSTI payloads start from that mean nothing in a notification template.
FORBIDDEN_NAMES = frozenset({"self", "config", "cycler", "joiner", "namespace", "lipsum"})
UNSAFE_ATTRIBUTES = (
    UNSAFE_FUNCTION_ATTRIBUTES
    | UNSAFE_METHOD_ATTRIBUTES
    | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES
    | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
    | {"mro"}
)
LOOP_FILTER = "clarion_loop_budget"
__all__ = ["FIELDS", "MAX_ITERATIONS", "MAX_OUTPUT", "TemplateError", "check", "render_field"]
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_MISSING_ATTRIBUTE = re.compile(r"has no attribute '([^']+)'$")


class TemplateError(ValueError):
    """A template that cannot be saved or rendered, and where: the field and line, and for
    a missing variable its name. ``kind``: syntax, unsafe, undefined or render."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "render",
        field: str | None = None,
        line: int | None = None,
        variable: str | None = None,
    ) -> None:
        self.message, self.kind, self.field, self.line = message, kind, field, line
        self.variable = variable
        # Set by whoever knows which version failed.
        self.channel: str | None = None
        self.locale: str | None = None
        where = ", ".join(
            part for part in (field, f"line {line}" if line else None) if part is not None
        )
        super().__init__(f"{where}: {message}" if where else message)

    def details(self) -> dict[str, Any]:
        """The problem+json members naming where it failed."""
        found = {
            "channel": self.channel,
            "locale": self.locale,
            "field": self.field,
            "line": self.line,
            "variable": self.variable,
        }
        return {"kind": self.kind, **{k: v for k, v in found.items() if v is not None}}


# -- filters ------------------------------------------------------------------------------
def plural(count: Any, *forms: str) -> str:
    """The form of a word for ``count``: two forms (English: one, other) or three
    (Russian and other Slavic languages: one, few, many), e.g.
    ``{{ n|plural("уведомление", "уведомления", "уведомлений") }}``."""
    n = abs(int(count))
    if len(forms) == 2:
        return forms[0] if n == 1 else forms[1]
    if len(forms) != 3:
        raise ValueError("plural takes two forms (one, other) or three (one, few, many)")
    if n % 10 == 1 and n % 100 != 11:
        return forms[0]
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return forms[1]
    return forms[2]


_NUMBER_SPEC = re.compile(r"^[+-]?,?(\.\d{1,2})?[dfgeE%]$")


def number(value: Any, spec: str = "g") -> str:
    """A number with a Python format spec limited to sign, grouping, precision and type
    (``"g"``, ``".1%"``, ``",d"``), e.g. ``{{ rate|number(".1%") }}``."""
    if not _NUMBER_SPEC.match(spec):
        raise ValueError(f"unsupported number format {spec!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"number expects a number, got {type(value).__name__}")
    return format(value, spec)


def safe_url(value: Any) -> str | None:
    """The URL if it is http(s), else None: a ``javascript:`` link must not become an href."""
    if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):
        return value
    return None


def _loop_budget(iterable: Any):
    """Every ``{% for %}`` iterates through this (added at compile): a render may loop at
    most MAX_ITERATIONS times in total, whatever the nesting."""
    for item in iterable:
        limits.count_iteration()
        yield item


# -- environment --------------------------------------------------------------------------
class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        # ``a ~ b`` joins through the environment, which charges the result first.
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), context.eval_ctx)")

    def visit_Getitem(self, node: nodes.Getitem, frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        # Jinja writes ``x[a:b]`` as Python; through getitem, a slice is charged as a copy.
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for part in (node.arg.start, node.arg.stop, node.arg.step):
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator
    # Captured blocks, macro bodies and ``~``: charged before they are joined.
    concat = staticmethod(limits.concat)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and (
            (isinstance(right, int | float) and abs(right) > MAX_EXPONENT)
            or (isinstance(left, int) and left.bit_length() > 64)
        ):
            raise SecurityError(f"powers beyond 64-bit bases and exponent {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_REPEAT:
                    raise SecurityError(f"a repetition longer than {MAX_REPEAT} items")
        limits.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        limits.count_call()
        planned, args, new = limits.plan_call(__obj, args, kwargs)
        limits.charge(planned)
        result = super().call(__context, __obj, *args, **kwargs)
        if new:
            limits.charge_excess(result, planned)
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        limits.check_slice(obj, argument)  # a slice is a copy
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any):
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt, mapping = value.__self__, value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            if mapping:
                limits.charge(limits.format_size(fmt, (), args[0] if args else {}))
            else:
                limits.charge(limits.format_size(fmt, args, kwargs))
            return wrapper(*args, **kwargs)

        return bounded

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # Jinja returns an undefined that raises when used; raising at once means a probe
        # such as ``{% if x.__class__ is defined %}`` is refused too, not silently false.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )


def _environment(autoescape: bool, undefined=StrictUndefined) -> _Sandbox:
    env = _Sandbox(
        undefined=undefined,
        autoescape=autoescape,
        keep_trailing_newline=False,
        finalize=limits.check_output,
    )
    for name in ("cycler", "joiner", "namespace", "lipsum"):
        env.globals.pop(name, None)
    for name, func in list(env.filters.items()):
        if name not in limits.FREE_FILTERS:
            env.filters[name] = limits.bounded_filter(name, func)
    env.filters.update(
        {
            "join": limits.bounded_join,
            "plural": plural,  # these three return one of their inputs, or a short number
            "number": number,
            "safe_url": safe_url,
            LOOP_FILTER: _loop_budget,
        }
    )
    return env


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)
# The trial render at save time: every variable is undefined and renders as nothing.
_TRIAL = {html: _environment(html, ChainableUndefined) for html in (False, True)}


def _parse(env: _Sandbox, field: str, source: str) -> nodes.Template:
    try:
        return env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            exc.message or "syntax error", kind="syntax", field=field, line=exc.lineno
        ) from None


def _scan(field: str, tree: nodes.Template) -> None:
    """Refuse, with its line, what can only be an attempt to leave the sandbox."""
    for node in tree.find_all(nodes.Node):
        reason = None
        if isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
            reason = "templates cannot load other templates"
        elif isinstance(node, nodes.Name) and node.name in FORBIDDEN_NAMES:
            reason = f"{node.name!r} is not available in templates"
        elif isinstance(node, nodes.Getattr) and _unsafe_name(node.attr):
            reason = f"attribute {node.attr!r} is not accessible"
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if isinstance(node.arg.value, str) and _unsafe_name(node.arg.value):
                reason = f"item {node.arg.value!r} is not accessible"
        elif isinstance(node, nodes.Filter) and node.name in ("attr", LOOP_FILTER):
            names = [a.value for a in node.args if isinstance(a, nodes.Const)]
            if node.name == LOOP_FILTER or any(_unsafe_name(str(n)) for n in names):
                reason = f"filter {node.name!r} with these arguments is not allowed"
        if reason:
            raise TemplateError(reason, kind="unsafe", field=field, line=node.lineno)


def _unsafe_name(name: str) -> bool:
    return name.startswith("_") or name in UNSAFE_ATTRIBUTES


def check(field: str, source: str) -> None:
    """Save-time check of one field: it compiles, holds no known escape attempt, and a
    render with no data at all stays within the limits (a template that builds too much
    whatever its data is refused now, not at its first send). Raises TemplateError with
    the field and line."""
    env = _HTML if field == "html" else _TEXT
    _scan(field, _parse(env, field, source))
    try:
        _compiled(source, field == "html")
    except TemplateSyntaxError as exc:
        raise _error(field, exc) from None
    try:
        _render(_compiled(source, field == "html", trial=True), {}, field)
    except SecurityError as exc:
        raise _error(field, exc) from None
    except Exception:  # noqa: S110 (data the real render will have: judged then)
        pass


@functools.lru_cache(maxsize=4096)
def _compiled(source: str, html: bool, trial: bool = False):
    """Compiled once per source (a stored version never changes, so its source is its
    identity); every loop's iterable goes through the iteration budget."""
    env = _TRIAL[html] if trial else (_HTML if html else _TEXT)
    tree = env.parse(source)
    for loop in tree.find_all(nodes.For):
        wrapped = nodes.Filter(loop.iter, LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
        loop.iter = wrapped.set_environment(env)
    return env.from_string(tree)


def render_field(field: str, source: str | None, data: dict[str, Any]) -> str | None:
    """One field rendered with ``data``; TemplateError (field, line, variable) on failure."""
    if source is None:
        return None
    try:
        return _render(_compiled(source, field == "html"), data, field)
    except Exception as exc:  # anything the render raised: named, never a traceback
        raise _error(field, exc) from None


def _render(template, data: dict[str, Any], field: str) -> str:
    """The template rendered within a fresh budget, its output counted as it comes."""
    token = limits.BUDGET.set(limits.Budget())
    try:
        size, parts = 0, []
        for chunk in template.generate(data):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the rendered {field} is longer than {MAX_OUTPUT} characters")
            parts.append(chunk)
        return "".join(parts)
    finally:
        limits.BUDGET.reset(token)


def _error(field: str, exc: Exception) -> TemplateError:
    line = _template_line(exc)
    if isinstance(exc, UndefinedError):
        text = str(exc.message or exc)
        found = _UNDEFINED_NAME.match(text) or _MISSING_ATTRIBUTE.search(text)
        return TemplateError(
            text,
            kind="undefined",
            field=field,
            line=line,
            variable=found.group(1) if found else None,
        )
    if isinstance(exc, SecurityError):
        return TemplateError(str(exc), kind="unsafe", field=field, line=line)
    if isinstance(exc, TemplateSyntaxError):
        return TemplateError(
            exc.message or "syntax error", kind="syntax", field=field, line=exc.lineno
        )
    return TemplateError(f"{type(exc).__name__}: {exc}"[:300], field=field, line=line)


def _template_line(exc: BaseException) -> int | None:
    """The template line of the error: Jinja rewrites tracebacks so that the template's
    frames carry the template's own line numbers, under the file name ``<template>``."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == "<template>":
            line = lineno
    return line
