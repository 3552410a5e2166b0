"""JSON files read back checked: bounded size (read with a byte limit, special files refused: see fileio), nesting
depth checked by a bracket scan before the parser recurses, and a small declarative schema whose errors name the
file, the field and what was expected.

    spec = Obj({"labels": Nullable(List(Pair(Str(), Int(0, 9))))})
    meta = read_json_file("dataset.json", spec, max_bytes=2**20)     # JsonFileError on anything else

Every parse refuses NaN/Infinity literals (unless asked), integers of more than 4300 digits (Python's limit) and
invalid UTF-8 (a leading byte-order mark is accepted).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import BoundedReadError, read_regular_bytes

MAX_DEPTH = 32  # containers inside containers; our files need at most 5
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCAN_CHUNK = 1 << 22
_BRACKET_STEP = np.zeros(256, np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


class JsonFileError(UserError):
    """A JSON file is unreadable, too large, too deep, not JSON, or not of the expected shape; the message names
    the file and, for shape errors, the field."""


def nesting_depth(data: bytes) -> int:
    """Deepest bracket nesting of a JSON text, ignoring brackets inside strings; no recursion, linear time (string
    literals are cut out by a regular expression, then the brackets are counted with numpy, chunk by chunk)."""
    text = _STRING.sub(b"", data)
    depth = deepest = 0
    for start in range(0, len(text), _SCAN_CHUNK):
        steps = _BRACKET_STEP[np.frombuffer(text, np.uint8, min(_SCAN_CHUNK, len(text) - start), start)]
        levels = np.cumsum(steps, dtype=np.int64) + depth
        if levels.size:
            deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def parse_json(data: bytes, where: str, max_depth: int = MAX_DEPTH, allow_nonfinite: bool = False) -> Any:
    """Parse a JSON text; JsonFileError (naming `where`) when it is not UTF-8 JSON or nests deeper than max_depth.
    NaN/Infinity literals are refused unless `allow_nonfinite` (for callers whose schema names them better)."""
    depth = nesting_depth(data)
    if depth > max_depth:
        raise JsonFileError(f"{where} nests {depth} levels deep; at most {max_depth} are read (a hostile or "
                            f"damaged file?)")
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark is accepted
        return json.loads(text, parse_constant=None if allow_nonfinite else _refuse_constant)
    except UnicodeDecodeError as e:
        raise JsonFileError(f"{where} is not UTF-8 text ({e})") from e
    except (ValueError, RecursionError) as e:  # RecursionError: a depth the scan miscounted (unbalanced quotes)
        if "int_max_str_digits" in str(e):
            raise JsonFileError(f"{where} holds an integer of more than {sys.get_int_max_str_digits()} digits") from e
        raise JsonFileError(f"{where} is not valid JSON: {str(e)[:200]}") from e


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json_file(path: str | os.PathLike, spec: Spec | None = None, *, max_bytes: int,
                   max_depth: int = MAX_DEPTH, what: str = "file") -> Any:
    """Read, parse and (with `spec`) check a JSON file; JsonFileError naming the file for anything wrong."""
    where = f"{what} {os.fspath(path)}"
    try:
        data = read_regular_bytes(path, max_bytes, what)
    except BoundedReadError as e:
        raise JsonFileError(str(e)) from e
    value = parse_json(data, where, max_depth)
    if spec is not None:
        check(value, spec, where)
    return value


# ---- schema ------------------------------------------------------------------------------------------------------

class Spec:
    """What one JSON value must be: `first_error(value, field)` is None when it conforms, else the first problem
    as 'field <field>: expected ..., got ...'."""

    expected = "a value"

    def first_error(self, value: Any, field: str) -> str | None:
        return None


def _at(field: str) -> str:
    return f"field {field}" if field else "top level"


def _got(value: Any) -> str:
    """A short description of a JSON value for messages."""
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class AnyValue(Spec):
    expected = "any value"


class Str(Spec):
    def __init__(self, max_len: int = 4096) -> None:
        self.max_len = max_len
        self.expected = f"a string of at most {max_len} characters"

    def first_error(self, value: Any, field: str) -> str | None:
        if not isinstance(value, str) or len(value) > self.max_len:
            return f"{_at(field)}: expected {self.expected}, got {_got(value)}"
        return None


class Number(Spec):
    """A finite number (integers with `integer`) in [lo, hi]; booleans are not numbers."""

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, integer: bool = False) -> None:
        self.lo, self.hi, self.integer = lo, hi, integer
        kind = "an integer" if integer else "a finite number"
        bounds = [f">= {lo:g}"] * (lo != -math.inf) + [f"<= {hi:g}"] * (hi != math.inf)
        self.expected = kind + (" " + " and ".join(bounds) if bounds else "")

    def first_error(self, value: Any, field: str) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (isinstance(value, int) if self.integer else math.isfinite(value)) and self.lo <= value <= self.hi
        return None if ok else f"{_at(field)}: expected {self.expected}, got {_got(value)}"


def Int(lo: float = -math.inf, hi: float = math.inf) -> Number:  # noqa: N802 (reads as a type in a spec)
    return Number(lo, hi, integer=True)


class Bool(Spec):
    expected = "true or false"

    def first_error(self, value: Any, field: str) -> str | None:
        return None if isinstance(value, bool) else f"{_at(field)}: expected {self.expected}, got {_got(value)}"


class List(Spec):
    """A list of `item`s, min_len..max_len long."""

    def __init__(self, item: Spec, min_len: int = 0, max_len: int = 10**7) -> None:
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.expected = f"a list of {min_len}..{max_len} items, each {item.expected}"

    def first_error(self, value: Any, field: str) -> str | None:
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            return f"{_at(field)}: expected {self.expected}, got {_got(value)}"
        for i, v in enumerate(value):
            error = self.item.first_error(v, f"{field}[{i}]")
            if error:
                return error
        return None


class Tuple(Spec):
    """A list of fixed length whose items have their own specs (e.g. [name, label])."""

    def __init__(self, *items: Spec) -> None:
        self.items = items
        self.expected = "[" + ", ".join(s.expected for s in items) + "]"

    def first_error(self, value: Any, field: str) -> str | None:
        if not isinstance(value, list) or len(value) != len(self.items):
            return f"{_at(field)}: expected {self.expected}, got {_got(value)}"
        for i, (spec, v) in enumerate(zip(self.items, value)):
            error = spec.first_error(v, f"{field}[{i}]")
            if error:
                return error
        return None


class Obj(Spec):
    """An object with `required` keys (and `optional` ones) of the given specs; other keys are allowed only with
    `extra`."""

    def __init__(self, required: Mapping[str, Spec], optional: Mapping[str, Spec] | None = None,
                 extra: bool = True) -> None:
        self.required, self.optional, self.extra = dict(required), dict(optional or {}), extra
        self.expected = "an object with " + (", ".join(f'"{k}"' for k in self.required) or "any keys")

    def first_error(self, value: Any, field: str) -> str | None:
        if not isinstance(value, dict):
            return f"{_at(field)}: expected {self.expected}, got {_got(value)}"
        for key, spec in self.required.items():
            if key not in value:
                return f'{_at(field)}: no "{key}" key (expected {spec.expected})'
        for key, v in value.items():
            spec = self.required.get(key) or self.optional.get(key)
            if spec is None:
                if not self.extra:
                    known = ", ".join(self.required | self.optional)
                    return f'{_at(field)}: unexpected key "{key:.60}" (known: {known})'
                continue
            error = spec.first_error(v, f"{field}.{key}" if field else key)
            if error:
                return error
        return None


class OneOf(Spec):
    """A value that conforms to one of `options`; otherwise the most specific complaint (the one about the
    deepest field, e.g. a bad item of a list rather than 'not null')."""

    def __init__(self, *options: Spec) -> None:
        self.options = options
        self.expected = " or ".join(s.expected for s in options)

    def first_error(self, value: Any, field: str) -> str | None:
        errors = []
        for spec in self.options:
            error = spec.first_error(value, field)
            if error is None:
                return None
            errors.append(error)
        deepest = max(errors, key=lambda e: len(e.split(":", 1)[0]))
        if deepest.split(":", 1)[0] == _at(field):  # no option got further than the value itself
            return f"{_at(field)}: expected {self.expected}, got {_got(value)}"
        return deepest


class Null(Spec):
    expected = "null"

    def first_error(self, value: Any, field: str) -> str | None:
        return None if value is None else f"{_at(field)}: expected null, got {_got(value)}"


def Nullable(spec: Spec) -> OneOf:  # noqa: N802 (reads as a type in a spec)
    return OneOf(Null(), spec)


class Where(Spec):
    """`spec` plus a predicate on the value (e.g. one length for all vectors); `expected` says what it checks."""

    def __init__(self, spec: Spec, predicate: Callable[[Any], bool], expected: str) -> None:
        self.spec, self.predicate, self.expected = spec, predicate, expected

    def first_error(self, value: Any, field: str) -> str | None:
        error = self.spec.first_error(value, field)
        if error is None and not self.predicate(value):
            error = f"{_at(field)}: expected {self.expected}"
        return error


def check(value: Any, spec: Spec, where: str, field: str = "") -> None:
    """JsonFileError '<where>: <field>: expected ..., got ...' when `value` does not conform to `spec`."""
    error = spec.first_error(value, field)
    if error:
        raise JsonFileError(f"{where}: {error}")


__all__: Sequence[str] = ["AnyValue", "Bool", "Int", "JsonFileError", "List", "MAX_DEPTH", "Null", "Nullable",
                          "Number", "Obj", "OneOf", "Spec", "Str", "Tuple", "Where", "check", "nesting_depth",
                          "parse_json", "read_json_file"]
