"""What one template render may build, bounded where it is built.

Checking the rendered field's length afterwards is too late: ``'a'|center(50000000)``
has built 400 MB by then. So every way a template can make a string or a list larger
than its inputs (operators, ``~``, filters, string methods, format widths, captured
blocks, a list printed whole) first estimates what it is about to build, and charges
that against the render's budget of :data:`MAX_BUILD` characters (list items count one
each); past the budget it raises SecurityError before building anything. Operations
that only pick from what exists (``first``, ``length``, ``sort``, ``select``…) cost
nothing. Calls are counted too, so recursion that builds nothing still ends.

The estimates are upper bounds, cheap to take: a string's length, a format's widths,
and for containers a walk that stops as soon as the budget is passed.
"""

from __future__ import annotations

import contextvars
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2.filters import make_attrgetter, sync_do_join
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import SecurityError
from jinja2.utils import _PassArg

# Loop iterations in total, characters (and list items) built besides the output, and
# calls (macros included), per rendered field.
MAX_ITERATIONS = 10_000
MAX_BUILD = 1024 * 1024
MAX_CALLS = 30_000
MAX_INT_BITS = 8192


@dataclass
class Budget:
    """What is left to one render; the sandbox's hooks draw on it."""

    iterations: int = MAX_ITERATIONS
    build: int = MAX_BUILD
    calls: int = MAX_CALLS


BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "clarion_template_budget", default=None
)


def charge(size: int) -> None:
    """Take ``size`` characters from the render's budget, or raise before they are built.
    Outside a render (Jinja folding constants while it compiles) one operation may build
    at most MAX_BUILD."""
    budget = BUDGET.get()
    left = MAX_BUILD if budget is None else budget.build
    if size > left:
        raise SecurityError(f"the template builds more than {MAX_BUILD} characters")
    if budget is not None:
        budget.build = left - size


def count_call() -> None:
    budget = BUDGET.get()
    if budget is not None:
        budget.calls -= 1
        if budget.calls < 0:
            raise SecurityError(f"the template makes more than {MAX_CALLS} calls")


def count_iteration() -> None:
    budget = BUDGET.get()
    if budget is not None:
        budget.iterations -= 1
        if budget.iterations < 0:
            raise SecurityError(f"the template loops more than {MAX_ITERATIONS} times")


_SEQUENCES = (list, tuple, set, frozenset, range, type({}.keys()), type({}.values()))
_SEQUENCES += (type({}.items()),)


def size(obj: Any, indent: int = 0, limit: int = MAX_BUILD) -> int:
    """An upper bound of the length of ``str(obj)`` (or its JSON, or its pretty print with
    ``indent`` per level), or a number past ``limit`` as soon as it is known to pass it."""
    total, stack = 0, [(obj, 0)]
    while stack and total <= limit:
        item, depth = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + len(item) * (4 + indent * (depth + 1))
            stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, _SEQUENCES):
            total += 2 + len(item) * (2 + indent * (depth + 1))
            stack.extend((part, depth + 1) for part in item)
        else:  # numbers, and objects whose text is their type's name (undefined, loop…)
            total += 64
    return total


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else size(value)


# -- format strings ------------------------------------------------------------------------
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
_NUMBERS = re.compile(r"\d+")


def _largest(args: Any) -> int:
    if isinstance(args, Mapping):
        args = list(args.values())
    elif not isinstance(args, tuple | list):
        args = [args]
    return max((_length(a) for a in args), default=0)


def printf_size(fmt: str | bytes, args: Any) -> int:
    """Upper bound of ``fmt % args``: widths and precisions are added, each conversion
    may be as long as the longest argument (``%r``/``%a`` escape up to 10× of it)."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    largest, total = _largest(args), len(text)
    for width, precision, kind in _PRINTF.findall(text):
        if "*" in (width, precision):
            raise SecurityError("'*' widths are not allowed in templates")
        total += int(width or 0) + int(precision or 0) + largest * (10 if kind in "ra" else 1)
    return total


def format_size(fmt: str, args: tuple, kwargs: Mapping) -> int:
    """Upper bound of ``fmt.format(*args, **kwargs)`` (and ``format_map``)."""
    largest = max(_largest(args), _largest(kwargs))
    total = len(fmt)
    for _, field, spec, conversion in string.Formatter().parse(fmt):
        if field is None:
            continue
        if spec and "{" in spec:
            raise SecurityError("nested format specifications are not allowed in templates")
        numbers = sum(int(n) for n in _NUMBERS.findall(spec or ""))
        total += numbers + largest * (10 if conversion in ("r", "a") else 1)
    return total


# -- operators -----------------------------------------------------------------------------
def check_binop(operator: str, left: Any, right: Any) -> None:
    """Charge what ``left <operator> right`` builds: ``*`` repeats, ``+`` concatenates,
    ``%`` formats; integer products stay under MAX_INT_BITS."""
    sequence = str | bytes | list | tuple
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"a product of more than {MAX_INT_BITS} bits")
            return
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, sequence) and isinstance(times, int):
                charge(len(seq) * max(times, 0))
    elif operator == "+" and isinstance(left, sequence) and isinstance(right, sequence):
        charge(len(left) + len(right))
    elif operator == "%" and isinstance(left, str | bytes):
        charge(printf_size(left, right))


def concat(parts: Iterable[Any], eval_ctx: Any = None) -> str:
    """``a ~ b`` and captured blocks (``{% set x %}``, macros, ``{% filter %}``)."""
    parts = list(parts)
    charge(sum(_length(p) for p in parts))
    if eval_ctx is not None and eval_ctx.autoescape:
        return markup_join(parts)
    return str_join(parts)


def check_output(value: Any) -> Any:
    """``{{ value }}``: charged as it is written, since a block that captures output
    (``{% set x %}``, a macro, ``{% filter %}``) keeps every piece until it is joined;
    a non-string is charged for the text it is about to become."""
    charge(len(value) if isinstance(value, str) else size(value))
    return value


def check_slice(obj: Any, argument: Any) -> None:
    if isinstance(argument, slice) and isinstance(obj, str | bytes | list | tuple):
        charge(len(range(*argument.indices(len(obj)))))


# -- filters -------------------------------------------------------------------------------
# Filters that return a number, a flag, one of their inputs, or a lazy view of them.
FREE_FILTERS = frozenset(
    {"abs", "attr", "count", "d", "default", "dictsort", "filesizeformat", "first", "float"}
    | {"groupby", "int", "items", "last", "length", "map", "max", "min", "random", "reject"}
    | {"rejectattr", "round", "safe", "select", "selectattr", "sort", "unique", "wordcount"}
)


def _int(value: Any) -> int:
    return max(int(value), 0)


def _center(value, width=80, *_, **__) -> int:
    return _length(value) + _int(width)


def _format(value, *args, **kwargs) -> int:
    if not isinstance(value, str):
        charge(size(value))
        value = str(value)
    return printf_size(value, kwargs or args)


def _lines(value: Any) -> int:
    return value.count("\n") + 1 if isinstance(value, str) else _length(value)


def _indent(value, width=4, *_, **__) -> int:
    step = len(width) if isinstance(width, str) else _int(width)
    return _length(value) + (_lines(value) + 1) * step


def _replace(value, old, new, count=None) -> int:
    length = _length(value)
    if isinstance(value, str) and isinstance(old, str):
        hits = value.count(old) if old else length + 1
    else:
        hits = length + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return length + hits * max(_length(new) - _length(old), 0)


def _wordwrap(value, width=79, break_long_words=True, wrapstring=None, *_, **__) -> int:
    length = _length(value)
    lines = length // max(int(width), 1) + _lines(value)
    return length + lines * (1 if wrapstring is None else _length(wrapstring))


def _truncate(value, length=255, killwords=False, end="...", *_, **__) -> int:
    return min(_length(value), _int(length)) + _length(end)


def _fill(value, count, fill_with=None) -> int:
    # batch pads its last row to ``count`` items; slice makes ``count`` lists.
    return _int(count)


def _sum(value, attribute=None, start=0) -> int:
    # From a number, only numbers can be added: no list or string grows by repeated "+".
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise SecurityError("sum adds numbers only")
    return 0


def _tojson(value, indent=None) -> int:
    step = len(indent) if isinstance(indent, str) else _int(indent or 0)
    return size(value, indent=step + 1)


def _urlize(value, trim_url_limit=None, nofollow=False, target=None, rel=None, *_, **__) -> int:
    words = value.count(" ") + value.count("\n") + 1 if isinstance(value, str) else 1
    return _length(value) + words * (_length(target or "") + _length(rel or ""))


ESTIMATES: dict[str, Callable[..., int]] = {
    "batch": _fill,
    "center": _center,
    "format": _format,
    "indent": _indent,
    "pprint": lambda value: size(value, indent=2),
    "replace": _replace,
    "slice": _fill,
    "sum": _sum,
    "tojson": _tojson,
    "truncate": _truncate,
    "urlize": _urlize,
    "wordwrap": _wordwrap,
}


def bounded_filter(name: str, func: Callable) -> Callable:
    """``func`` charging what it builds: its estimate (else the length of its input)
    before it runs, and what the result exceeds that by after."""
    estimate = ESTIMATES.get(name, lambda value, *_, **__: _length(value))
    skip = 1 if _PassArg.from_obj(func) is not None else 0

    def bounded(*args: Any, **kwargs: Any) -> Any:
        planned = estimate(*args[skip:], **kwargs)
        charge(planned)
        result = func(*args, **kwargs)
        charge_excess(result, planned)
        return result

    bounded.jinja_pass_arg = getattr(func, "jinja_pass_arg", None)  # type: ignore[attr-defined]
    return bounded


def bounded_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    """``join``, charged with the length of what is joined (attributes picked first)."""
    items = list(value)
    if attribute is not None:
        pick = make_attrgetter(eval_ctx.environment, attribute)
        items = [pick(item) for item in items]
    charge(sum(_length(item) for item in items) + _length(d) * len(items))
    return sync_do_join(eval_ctx, items, d)


bounded_join.jinja_pass_arg = _PassArg.eval_context  # type: ignore[attr-defined]


def charge_excess(result: Any, planned: int) -> None:
    built = len(result) if isinstance(result, str | bytes | list | tuple) else 0
    if built > planned:
        charge(built - planned)


# -- methods -------------------------------------------------------------------------------
# String methods that return a number, a flag or a table built from their arguments.
SCALAR_METHODS = frozenset(
    {"count", "find", "rfind", "index", "rindex", "startswith", "endswith", "maketrans"}
    | {"isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower"}
    | {"isnumeric", "isprintable", "isspace", "istitle", "isupper"}
)


def _arg(args: tuple, kwargs: Mapping, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def plan_call(func: Any, args: tuple, kwargs: Mapping) -> tuple[int, tuple, bool]:
    """(characters the call will build, its arguments with any iterator made a list,
    whether its result is new and to be charged if longer) of a call from a template."""
    owner, name = getattr(func, "__self__", None), getattr(func, "__name__", "")
    if isinstance(owner, str | bytes):
        return *_plan_text(owner, name, args, kwargs), True
    if name == "to_bytes" and isinstance(owner, int):
        return _int(_arg(args, kwargs, 0, "length", 1)), args, False
    if name == "fromkeys" and args:
        items = list(args[0])
        return len(items), (items, *args[1:]), False
    if name == "copy" and isinstance(owner, list | dict | set):
        return len(owner), args, False
    if name == "escape" and isinstance(owner, type) and issubclass(owner, str) and args:
        return 6 * _length(args[0]), args, False
    return 0, args, False


def _plan_text(text: str | bytes, name: str, args: tuple, kwargs: Mapping) -> tuple[int, tuple]:
    length = len(text)
    if name in SCALAR_METHODS:
        return 0, args
    if name in ("center", "ljust", "rjust", "zfill"):
        return length + _int(_arg(args, kwargs, 0, "width", 0)), args
    if name == "expandtabs":
        tabs = text.count(b"\t" if isinstance(text, bytes) else "\t")
        return length + tabs * _int(_arg(args, kwargs, 0, "tabsize", 8)), args
    if name == "join" and args:
        items = list(args[0])
        return sum(_length(i) for i in items) + length * len(items), (items, *args[1:])
    if name == "replace" and len(args) >= 2:
        count = _arg(args, kwargs, 2, "count", -1)
        return _replace(text, args[0], args[1], count), args
    if name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((_length(v) for v in args[0].values() if v is not None), default=1)
        return length * max(longest, 1), args
    return length, args
