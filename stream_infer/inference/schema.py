"""The data contract: the JSON Schema (draft 2020-12) of the input events a model accepts.

Derived from the model's signature, like the decoder's checks, and kept in
step with them: an event the worker's decoder accepts is valid against this
schema, and an event it rejects at the validate stage is not, with three
differences JSON Schema cannot express (a JSON number carries no trace of how
it was written, and sibling arrays cannot be tied to one length):

- an ``id`` written as an integral float (``"id": 3.0``) is an integer to JSON
  Schema; the decoder takes only strings and integers written as integers;
- for 64-bit integer inputs, a float literal of magnitude 2^53 or more
  (``1e17``) is an integer in range to JSON Schema; the decoder refuses it,
  because such a float is not an exact integer any more;
- with a dynamic inner axis (per-row shape ``[3, ?]``), ragged rows
  (``[[1], [1, 2], [1]]``) pass the schema; the decoder refuses them.

Events that are not JSON at all (the decode stage) are out of a schema's reach.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from stream_infer.inference.model import InputSpec, Signature

__all__ = ["DRAFT", "input_schema", "schema_text"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"

# The smallest magnitude that the decoder's cast turns into infinity (so is refused):
# half a unit in the last place above the type's largest finite value. For float32
# the integer bound sits 2^74 below, which makes an exact integer literal (read
# exactly by a validator, but through a double by the decoder) and a float literal
# land on the same side of it; a validator that reads numbers as doubles sees 2^128 - 2^103.
_FLOAT_LIMITS: dict[str, int | float] = {
    "float16": 65520,
    "float32": 2**128 - 2**103 - 2**74,
}
_INT64_RANGE = (-(2**63), 2**64 - 1)  # what JSON parsing into the decoder keeps as an integer


def _leaf(spec: InputSpec) -> dict[str, Any]:
    """One element of the input: its JSON type and, for numbers, the range of the dtype."""
    kind, dtype = spec.kind, spec.dtype
    if kind == "b":
        return {"type": "boolean"}
    if kind == "O":
        return {"type": "string"}
    if kind in "iu":
        info = np.iinfo(dtype)
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    limit = _FLOAT_LIMITS.get(dtype.name)
    if limit is None:  # float64: what parses to a finite double
        top = float(np.finfo(np.float64).max)
        return {"type": "number", "minimum": -top, "maximum": top}
    return {"type": "number", "exclusiveMinimum": -limit, "exclusiveMaximum": limit}


def _row(spec: InputSpec) -> dict[str, Any]:
    """The per-row value: nested arrays for the axes after the batch axis, any length if dynamic."""
    node = _leaf(spec)
    for dim in reversed(spec.shape):
        node = {"type": "array", "items": node}
        if dim is not None:
            node["minItems"] = node["maxItems"] = dim
    return {"description": f"input {spec.describe()}", **node}


def _named(signature: Signature) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {spec.name: _row(spec) for spec in signature.inputs},
        "required": list(signature.input_names),
        "additionalProperties": False,
    }


def _example_value(spec: InputSpec) -> Any:
    shape = tuple(1 if d is None else d for d in spec.shape)
    zero: Any = {"b": False, "O": "", "f": 0.0}.get(spec.kind, 0)
    return np.full(shape, zero, dtype=object).tolist() if shape else zero


def input_schema(signature: Signature, name: str = "", version: str = "") -> dict[str, Any]:
    """The schema of one input event (SPEC section 3) for a model of this signature."""
    if len(signature.inputs) == 1:
        # One input: the bare per-row value, or an object that names the input.
        features: dict[str, Any] = {"anyOf": [_row(signature.inputs[0]), _named(signature)]}
        example: Any = _example_value(signature.inputs[0])
    else:
        features = _named(signature)
        example = {spec.name: _example_value(spec) for spec in signature.inputs}
    model = f"{name} v{version}" if name else "the model"
    low, high = _INT64_RANGE
    return {
        "$schema": DRAFT,
        "title": f"stream-infer input event for {model}",
        "description": (
            "One event per Kafka record value. 'features' feeds the model inputs "
            f"({', '.join(s.describe() for s in signature.inputs)}); 'id' is echoed on the "
            "prediction; other fields are ignored."
        ),
        "type": "object",
        "properties": {
            "features": features,
            "id": {"type": ["string", "integer", "null"], "minimum": low, "maximum": high},
        },
        "required": ["features"],
        "examples": [{"id": "example-1", "features": example}],
    }


def schema_text(schema: dict[str, Any]) -> str:
    """Indented JSON; the standard library's, as orjson cannot write the float32 bound (> 2^64)."""
    return json.dumps(schema, indent=2, ensure_ascii=False)
