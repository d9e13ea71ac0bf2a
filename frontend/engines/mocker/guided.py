"""Structured output for the mock engine: text that satisfies a request's ``GuidedDecoding``, so clients of
``response_format`` / ``guided_*`` can be tested end to end.

* ``choice``: one of the choices.
* ``json``: a JSON document valid against simple schemas: ``type`` (one or a list), objects with
  ``properties`` / ``required`` (every property is generated; an object without properties gets one
  ``"answer"`` string unless ``additionalProperties`` is false), arrays (``items``, ``prefixItems``,
  ``minItems`` / ``maxItems``), strings (``minLength`` / ``maxLength``, ``format`` date, date-time, time,
  email, uri, uuid), numbers and integers (``minimum`` / ``maximum``, exclusive bounds, ``multipleOf``),
  booleans, null, ``enum``, ``const``, ``anyOf`` / ``oneOf`` (the first branch), ``allOf`` (merged), local
  ``$ref`` (``#/$defs/...``, ``#/definitions/...``). Not honoured: ``pattern``, ``not``, conditionals,
  dependent schemas, ``uniqueItems`` on non-scalars, remote refs.
* ``regex`` and ``grammar``: not honoured (the corpus text as usual).

A schema that asks for a document of more than ``MAX_SIZE`` values and characters (``minItems: 1000000000``,
nested arrays, a huge ``minLength``) raises ``ValueError``, as any schema beyond the mock: no ``max_tokens``
could emit such a document, and building it would block the engine's event loop.

Values come from the request's random generator, so a seeded (or greedy) request gets the same document
each time. The text is then generated token by token like a scripted answer (``max_tokens`` can cut it).
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from ...protocol.engine import GuidedDecoding

WORDS = ("amber", "harbor", "lantern", "meadow", "river", "signal", "copper", "willow", "orbit", "quartz",
         "cedar", "ember", "falcon", "glacier", "island", "juniper", "kestrel", "lagoon", "marble", "nectar")
MAX_DEPTH = 24  # deeper schemas (or recursive $refs) get null, or the smallest value of the type
MAX_SIZE = 200_000  # values plus string characters of one document; more than a context window of tokens


def guided_text(guided: GuidedDecoding, rng: random.Random) -> str | None:
    """The output for ``guided``; None when the mock does not honour it (regex, grammar)."""
    if guided.choice:
        return rng.choice(guided.choice)
    if guided.json is not None:
        return json.dumps(JsonFaker(guided.json, rng).value(guided.json, 0), ensure_ascii=False)
    return None


class JsonFaker:
    """A JSON value valid against (simple) JSON Schemas; see the module docstring for what is covered."""

    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.size = 0  # values and characters made so far (MAX_SIZE)

    def _spend(self, amount: int) -> None:
        self.size += amount
        if self.size > MAX_SIZE:
            raise ValueError(f"the schema asks for a document of more than {MAX_SIZE} values and characters")

    def value(self, schema: Any, depth: int) -> Any:
        self._spend(1)
        if schema is True or not isinstance(schema, dict):
            return self._word()
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                merged = {k: v for k, v in schema.items() if k != key}
                return self.value({**merged, **self._resolve(branches[0], depth)}, depth + 1)
        kind = self._type(schema)
        if depth > MAX_DEPTH:
            return {"object": {}, "array": [], "string": "", "integer": 0, "number": 0, "boolean": False}.get(kind)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    # ---- schema plumbing ------------------------------------------------------------------------------

    def _resolve(self, schema: Any, depth: int) -> dict[str, Any]:
        """Follow a local ``$ref`` and merge ``allOf`` (as far as the depth allows)."""
        if not isinstance(schema, dict):
            return {}
        for _ in range(MAX_DEPTH):
            ref = schema.get("$ref")
            if not isinstance(ref, str) or not ref.startswith("#"):
                break
            target = self._pointer(ref)
            schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and depth <= MAX_DEPTH:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in all_of:
                self._spend(1)  # allOf parts that refer back to the schema branch out exponentially
                part = self._resolve(part, depth + 1)
                properties = {**merged.get("properties", {}), **part.get("properties", {})}
                required = list(dict.fromkeys([*merged.get("required", []), *part.get("required", [])]))
                merged = {**merged, **part, "properties": properties, "required": required}
            schema = merged
        return schema

    def _pointer(self, ref: str) -> dict[str, Any]:
        node: Any = self.root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    @staticmethod
    def _type(schema: dict[str, Any]) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = kinds[0]
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    # ---- values -----------------------------------------------------------------------------------------

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            if schema.get("additionalProperties") is False:
                return {}
            extra = schema.get("additionalProperties")
            return {"answer": self.value(extra, depth + 1) if isinstance(extra, dict) else self._sentence()}
        return {name: self.value(sub, depth + 1) for name, sub in properties.items()}

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        low = max(int(schema.get("minItems", 1) or 0), len(prefix))
        high = schema.get("maxItems")
        high = max(low, min(int(high), low + 1)) if isinstance(high, int) else low + 1
        count = self.rng.randint(low, high) if high > low else low
        self._spend(count)  # before building: minItems may be huge
        items = schema.get("items", {})
        values = [self.value(sub, depth + 1) for sub in prefix[:count]]
        values += [self.value(items, depth + 1) for _ in range(count - len(values))]
        if schema.get("uniqueItems"):
            values = list(dict.fromkeys(v for v in values if isinstance(v, (str, int, float, bool))).keys()) \
                or values[:1]
        return values

    def _integer(self, schema: dict[str, Any]) -> int:
        low, high = self._bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first = -(-low // step) * step
            if first > high:
                return first
            return first + step * self.rng.randint(0, (high - first) // step)
        return self.rng.randint(low, high)

    def _number(self, schema: dict[str, Any]) -> float:
        low, high = self._bounds(schema, integer=False)
        if high <= low:
            return float(low)
        value = self.rng.uniform(low, high)
        if not math.isfinite(value):  # high - low overflowed (bounds near ±1.8e308): JSON has no Infinity
            value = self.rng.uniform(low / 2, high / 2)
        return round(value, 2)

    @staticmethod
    def _bounds(schema: dict[str, Any], integer: bool) -> tuple[Any, Any]:
        nudge = 1 if integer else 0.01
        low = schema.get("minimum")
        high = schema.get("maximum")
        if isinstance(schema.get("exclusiveMinimum"), (int, float)):
            low = schema["exclusiveMinimum"] + nudge
        if isinstance(schema.get("exclusiveMaximum"), (int, float)):
            high = schema["exclusiveMaximum"] - nudge
        if low is None:
            low = 0 if high is None or high >= 0 else high - 100
        if high is None:
            high = low + 100
        if integer:
            low, high = int(-(-low // 1)), int(high // 1)
        return low, max(low, high)

    def _string(self, schema: dict[str, Any]) -> str:
        rng = self.rng
        form = schema.get("format")
        if form == "date":
            text = f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        elif form == "date-time":
            text = f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T" \
                   f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        elif form == "time":
            text = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        elif form == "email":
            text = f"{self._word()}@example.com"
        elif form in ("uri", "url"):
            text = f"https://example.com/{self._word()}"
        elif form == "uuid":
            text = "%08x-%04x-4%03x-8%03x-%012x" % (rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12),
                                                    rng.getrandbits(12), rng.getrandbits(48))
        else:
            text = self._sentence()
        low = int(schema.get("minLength", 0) or 0)
        high = schema.get("maxLength")
        self._spend(max(low, len(text)))  # before padding: minLength may be huge
        while len(text) < low:
            text += " " + self._word()
        if isinstance(high, int) and len(text) > high:
            text = text[:high].rstrip() if high >= low else text[:high]
            text = text if len(text) >= low else text.ljust(low, "x")
        return text

    def _word(self) -> str:
        return self.rng.choice(WORDS)

    def _sentence(self) -> str:
        return " ".join(self._word() for _ in range(self.rng.randint(1, 3)))
