"""One event's features against one model input: accepted, or exactly what is wrong.

The batch decoder (``codec.py``) calls these when its whole-batch fast path
refuses a batch, and for the checks that are cheap per event: the messages
name the path of the bad value (``features[3][1] is string; input x takes
numbers``), so that a dead letter says what to fix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from stream_infer.errors import ValidationError
from stream_infer.inference.model import InputSpec

__all__ = [
    "cast",
    "check_row",
    "exact_ints",
    "fast_array",
    "first_bad",
    "has_bool",
    "json_type",
    "kind_word",
    "max_event_bytes",
    "range_message",
    "shape_message",
    "show",
    "too_big",
]

EXACT_FLOAT_INT = 2.0**53
# Hostile-input guard (see max_event_bytes): room per model value, and for the rest of an
# event (id, ignored fields). A JSON number needs at most ~25 bytes ("-1.2345678901234567e-308").
_BYTES_PER_VALUE = 64
_EVENT_OVERHEAD_BYTES = 64 * 1024
_ACCEPTED_SCALARS: dict[str, tuple[type, ...]] = {
    "f": (int, float),
    "i": (int, float),  # floats are accepted when integral (1.0), checked on cast
    "u": (int, float),
    "b": (bool,),
    "O": (str,),
}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def show(value: Any) -> str:
    """A JSON value for an error message: short ones verbatim, long ones by type."""
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= 40 else f"a long {json_type(value)}"


def first_bad(
    value: Any, accepted: tuple[type, ...], path: str, depth: int
) -> tuple[str, Any] | None:
    """The first leaf that is not an accepted scalar (or nests past ``depth``), with its path.

    Iterative, with the nesting capped by the input's rank: an event nested a
    thousand levels deep must not hit Python's recursion limit.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where_, level = stack.pop()
        if isinstance(item, list):
            if level >= depth:
                return where_, item
            stack.extend(
                (v, f"{where_}[{p}]", level + 1) for p, v in reversed(list(enumerate(item)))
            )
        elif (isinstance(item, bool) and bool not in accepted) or not isinstance(item, accepted):
            return where_, item
    return None


def has_bool(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool):
            return True
    return False


def cast(arr: np.ndarray, spec: InputSpec) -> np.ndarray | None:
    """Cast a parsed numeric array to the input's dtype, or None if a value does not fit."""
    target = spec.dtype
    if target.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(target)
        return out if np.isfinite(out).all() else None
    # Integer input: values must be integral and inside the type's range.
    info = np.iinfo(target)
    if not arr.size:
        return arr.astype(target)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (np.floor(arr) == arr).all()):
            return None
        # Beyond 2**53 a float64 is not an exact integer any more: a big id
        # batched with a float elsewhere would silently change. Let the
        # row-by-row path (which keeps Python ints exact) decide instead.
        if np.abs(arr).max() >= EXACT_FLOAT_INT:
            return None
    # Integral floats too: 300.0 must not wrap round to 44 in an int8 input.
    if arr.min() < info.min or arr.max() > info.max:
        return None
    return arr.astype(target)


def exact_ints(value: Any, spec: InputSpec, shape: tuple[int, ...]) -> np.ndarray | None:
    """Integers of a row that mixes ints and floats, converted without a float detour."""
    info = np.iinfo(spec.dtype)
    exact = []
    for v in np.array(value, dtype=object).reshape(-1).tolist():
        if isinstance(v, float):
            if not (v.is_integer() and abs(v) < EXACT_FLOAT_INT):
                return None
            v = int(v)
        if not info.min <= v <= info.max:
            return None
        exact.append(v)
    return np.array(exact, dtype=spec.dtype).reshape(shape)


def fast_array(spec: InputSpec, values: list[Any]) -> np.ndarray | None:
    """All rows of one input at once, or None when any row needs a closer look."""
    try:
        if spec.kind == "O":
            return None  # strings: numpy would accept numbers too, so check per row
        arr = np.array(values)
    except (ValueError, TypeError, OverflowError):
        return None
    if not spec.fits(arr.shape[1:]):
        return None
    if spec.kind == "b":
        return arr if arr.dtype.kind == "b" else None
    if arr.dtype.kind not in "iuf":
        return None
    return cast(arr, spec)


def check_row(spec: InputSpec, value: Any, label: str) -> np.ndarray:
    """One row of one input, validated, or a ValidationError that says exactly why."""
    accepted = _ACCEPTED_SCALARS[spec.kind]
    if not spec.shape:
        if (
            isinstance(value, list)
            or not isinstance(value, accepted)
            or (isinstance(value, bool) and bool not in accepted)
        ):
            raise ValidationError(
                f"{label} must be a single {kind_word(spec)} for input {spec.describe()}, "
                f"not {json_type(value)}"
            )
    elif not isinstance(value, list):
        raise ValidationError(
            f"{label} must be an array for input {spec.describe()}, not {json_type(value)}"
        )
    bad = first_bad(value, accepted, label, depth=len(spec.shape))
    if bad is not None:
        where, leaf = bad
        if isinstance(leaf, list):
            raise ValidationError(
                f"{label} is nested too deeply for input {spec.describe()} ({where} is an array)"
            )
        raise ValidationError(
            f"{where} is {json_type(leaf)}; input {spec.name} takes {kind_word(spec)}s"
        )
    ragged = ValidationError(
        f"{label} is ragged (nested arrays of different lengths); input {spec.describe()}"
    )
    try:
        arr = np.array(value, dtype=object if spec.kind == "O" else None)
    except (ValueError, OverflowError):
        raise ragged from None
    if spec.kind == "O" and not all(type(v) is str for v in arr.reshape(-1).tolist()):
        raise ragged  # an object array of lists: numpy does not complain for those
    if not spec.fits(arr.shape):
        raise ValidationError(shape_message(label, spec, arr.shape))
    if spec.kind in "iuf":
        fitted = cast(arr, spec)
        if fitted is None and spec.kind in "iu" and arr.dtype.kind == "f":
            fitted = exact_ints(value, spec, arr.shape)
        if fitted is None:
            raise ValidationError(range_message(label, spec, value, arr.shape))
        return fitted
    return arr.astype(spec.dtype) if spec.kind == "b" else arr


def shape_message(label: str, spec: InputSpec, shape: tuple[int, ...]) -> str:
    if len(spec.shape) == 1 and len(shape) == 1 and spec.shape[0] is not None:
        return f"{label} has {shape[0]} values; input {spec.name} takes {spec.shape[0]}"
    got = "[" + ", ".join(map(str, shape)) + "]"
    return f"{label} has shape {got}; input {spec.describe()}"


def range_message(label: str, spec: InputSpec, value: Any, shape: tuple[int, ...]) -> str:
    """Name the first element that does not fit, judged on the JSON value itself."""
    flat = np.array(value, dtype=object).reshape(-1).tolist()
    for pos, v in enumerate(flat):
        one = exact_ints(v, spec, ()) if spec.kind in "iu" else cast(np.array(v), spec)
        if one is not None:
            continue
        where = label + "".join(f"[{k}]" for k in np.unravel_index(pos, shape))
        if spec.kind in "iu" and isinstance(v, float) and math.isfinite(v):
            if not v.is_integer():
                kind = spec.dtype.name
                return f"{where} = {v!r} is not an integer; input {spec.name} is {kind}"
            if abs(v) >= EXACT_FLOAT_INT:
                return f"{where} = {v!r} is a float too large to be an exact integer"
        return f"{where} = {v!r} is out of range for {spec.dtype.name}"
    return f"{label} does not fit {spec.dtype.name}"  # pragma: no cover


def max_event_bytes(specs: tuple[InputSpec, ...]) -> int | None:
    """The largest event worth parsing for these inputs; None for dynamic axes or strings.

    An event bigger than every value of the model at its longest spelling, plus
    64 KiB for the id and fields the worker ignores, cannot be valid: it is
    refused unparsed, so that a batch of 1 MiB events costs no more than their bytes.
    """
    values = 0
    for spec in specs:
        if spec.kind == "O" or any(d is None for d in spec.shape):
            return None  # a text or a sequence may be long for good reasons
        values += math.prod(d for d in spec.shape if d is not None)
    return _EVENT_OVERHEAD_BYTES + _BYTES_PER_VALUE * values


def too_big(size: int, limit: int) -> str:
    return (
        f"event is {size} bytes, more than any valid event for this model can be "
        f"({limit} bytes); refused unparsed"
    )


def kind_word(spec: InputSpec) -> str:
    return {"b": "boolean", "O": "string"}.get(spec.kind, "number")
