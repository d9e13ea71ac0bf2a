"""Fuzzing every POST endpoint of ``/openapi.json`` on one real daemon (hypothesis; issue 13).

``test_fuzzed_bodies``: for each POST path of the OpenAPI document, hypothesis draws requests from the path's
request examples (plus a few seeds with tools, structured output, streams): fields replaced by odd values
(wrong types, huge or negative numbers, huge strings, empty or huge lists, null, nested objects, unicode,
lone surrogates), removed, or added (unknown names, and every property the request schema declares, with values
at and past its bounds; odd JSON Schemas where a field holds one); then the bytes are mangled (invalid UTF-8,
truncation, non-JSON, duplicate keys, NaN, BOMs, UTF-16) and sent with odd headers (content types, chunked
transfer, pinning headers, Expect). ``test_http_oddities``: wrong methods, paths beside the endpoints, query
strings, HTTP/2, and raw bytes that are hardly HTTP (lying Content-Length, pipelining, TLS, ...).
``test_clients_that_leave``: streams and a unary call left after the first bytes.

Properties, for every request:

* no 5xx: a 500 is a bug; a 503 (529 on ``/v1/messages*``) only for a request pinned to a worker instance
  that does not exist, since every model has live workers here;
* every error body has the API's shape: OpenAI's ``{"error": {"message", "type", "param", "code"}}``,
  Anthropic's ``{"type": "error", "error": {"type", "message"}}`` on ``/v1/messages`` and every path under it;
  a 200 JSON body, and each event of a stream, validates against the document's schema;
* a stream is read to its end, which must be the API's end (``data: [DONE]``, ``response.completed``,
  ``message_stop``, ``--frame--``) or an error event in the API's shape: never a truncated stream or a hang;
* afterwards: ``/health`` is 200, no child process of the daemon died (the supervisor would restart it
  silently), every model's routing load is released, and the RSS of the ``dyn-http`` processes grew by less
  than ``RSS_GROWTH_MIB``.

Valid-but-expensive requests (long videos, big generation budgets) are trimmed so that the mock answers at once:
this fuzzes validation and error paths, not throughput. Seeds include bodies nested past the 128-level limit
(a 400). Each path's run has a fixed seed, so a failure reproduces; hypothesis prints the falsifying case as an
``httpx`` call.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import socket
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from e2e_support import EXTRA_MODELS, MODEL, wait_routing_load_released
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator

from frontend.http import routes

SPEC = json.loads(routes.spec_bytes())  # what the daemon serves (the fixture checks it)
# The admin API changes the shared daemon's busy thresholds (a fuzzed body could make every worker busy for the
# tests after it): its hostile inputs are in test_e2e_dynamo_compat.py, against a daemon of its own.
ADMIN_PATHS = {"/busy_threshold"}
POST_PATHS = [path for path, item in SPEC["paths"].items() if "post" in item and path not in ADMIN_PATHS]
ANTHROPIC_ROUTE = "/v1/messages"  # it and every path under it answer in Anthropic's shapes
GENERATION_BUDGETS = {"/v1/chat/completions": "max_tokens", "/v1/completions": "max_tokens",
                      "/v1/responses": "max_output_tokens", "/v1/messages": "max_tokens"}
VIDEO_PATHS = {path for path in POST_PATHS if path.startswith("/v1/videos")}
MAX_EXAMPLES = 200
VIDEO_EXAMPLES = 50  # four video paths share one handler pair, and each video takes real encoding time
MAX_DEPTH = 200  # nesting of the deep seeds: past the 128-level limit (a 400), far from Python's recursion limit
CONTEXT_TOKENS = 32768  # the tiny model's context window
MAX_GENERATED_TOKENS = 2048  # per request, over all choices (valid budgets above are trimmed)
HUGE_TEXT = "x" * 200_000
READ_LIMIT = 64 << 20
RSS_GROWTH_MIB = 64  # a whole run grows it by about 5 MiB
REQUEST_TIMEOUT = httpx.Timeout(20.0, connect=5.0)

FUZZ_SETTINGS = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.large_base_example, HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------------------- values

def _nested(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 8191, 8192, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64,
    -(2**63) - 1, 10**30, -(10**30), 0.5, -0.0, 1.5, 1e308, -1e308, 5e-324, 1e-7,
    "", " ", "x", "0", "-1", "1e999", "nan", "null", "true", "tiny", "tiny-embed", "\x00", "\u202e\u0000\ufeff",
    "é中🎉" * 10, "\ud800", "\udfff\ud800", "<|im_start|>system\n", "{{ raise_exception('x') }}", "{% for %}",
    "<think>", "<tool_call>{\"name\": 1}</tool_call>", "a\r\nb", "%s%n", "../../etc/passwd", HUGE_TEXT,
    [], [[]], [None], [""], [0], [-1], [2**40], [8191, 8192], ["x"] * 2000, [0] * 100_000, [{}],
    [{"role": "user"}], {}, {"": None}, {"type": None}, {"type": "text"}, {"role": "user", "content": "x"},
    {"a": [1, {"b": None}]}, _nested(MAX_DEPTH - 2, "list"), _nested(MAX_DEPTH - 2, "dict"),
]
# JSON Schemas for the fields that hold one (structured output, tool parameters): odd, huge, recursive
TRICKY_SCHEMAS: list[Any] = [
    {}, {"type": "object"}, {"type": "array", "minItems": 10**9}, {"type": "string", "minLength": 10**9},
    {"type": "array", "minItems": 40, "items": {"type": "array", "minItems": 40, "items": {"type": "array",
                                                                                        "minItems": 40}}},
    {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
    {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
    {"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}, "required": ["c"]}},
     "$ref": "#/$defs/n"},
    {"$ref": "#/definitions/missing"}, {"$ref": "http://example.com/schema"},
    {"type": "integer", "minimum": 10, "maximum": 1}, {"type": "number", "minimum": -1e308, "maximum": 1e308},
    {"type": "integer", "exclusiveMinimum": 1e308}, {"enum": []}, {"anyOf": []}, {"not": {}},
    {"type": "string", "pattern": "("}, {"type": "unknown"}, {"type": ["string", "null"], "format": "date-time"},
    {"const": {"a": [1, None]}}, {"type": 5}, {"properties": {"a": {"type": "string"}}, "minProperties": 100},
    {"allOf": [{"type": "string"}, {"type": "integer"}]},
]
SCHEMA_FIELDS = {"schema", "guided_json", "parameters", "input_schema"}

odd_values = st.sampled_from(ODD_VALUES).map(copy.deepcopy) | st.integers() \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
leaf_values = st.sampled_from([None, True, 0, -1, 2**64, 1.5, "", "x", "é中🎉", "\ud800", [], {}]).map(copy.deepcopy)
key_names = st.sampled_from(["", " ", "model ", "MODEL", "__proto__", "constructor", "nvext", "\x00", "é中🎉",
                             "a" * 1000, "$ref", "type", "stream"]) | st.text(max_size=8)
tricky_schemas = st.sampled_from(TRICKY_SCHEMAS).map(copy.deepcopy)


# ---------------------------------------------------------------------------------------------------- schemas

def _deref(schema: dict) -> dict:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _variants(schema: dict) -> list[dict]:
    """The schema's alternatives, flattened through $ref and anyOf/oneOf."""
    schema = _deref(schema)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if not alternatives:
        return [schema]
    return [variant for alternative in alternatives for variant in _variants(alternative)]


def _properties(schema: dict | None) -> dict[str, dict]:
    properties: dict[str, dict] = {}
    for variant in _variants(schema) if schema else []:
        properties.update(variant.get("properties", {}))
    return properties


def _schema_at(schema: dict | None, path: tuple) -> dict | None:
    """The schema of the node at ``path`` of a body, as far as the document says."""
    for step in path:
        if schema is None:
            return None
        if isinstance(step, str):
            schema = _properties(schema).get(step)
        else:
            items = [variant["items"] for variant in _variants(schema) if "items" in variant]
            schema = items[0] if items else None
    return schema


def _integers(variant: dict) -> list[int]:
    low = variant.get("minimum", variant.get("exclusiveMinimum", -1) + 1 if "exclusiveMinimum" in variant else None)
    high = variant.get("maximum")
    values = {0, 1, 2, 3, 8191, 8192}  # 8192: the tiny model's vocabulary size
    if low is not None:
        values |= {low, low - 1}
    if high is not None:
        values.add(high + 1)
        if high <= 256 or high >= 2**31 - 1:  # not a valid but costly middle bound (frames, steps)
            values.add(high)
    return sorted(values)


def property_values(name: str, schema: dict, depth: int = 0) -> st.SearchStrategy:
    """Values of the property ``name``: its schema's, and odd JSON Schemas for a field that holds one."""
    values = schema_values(schema, depth)
    return tricky_schemas | values if name in SCHEMA_FIELDS else values


def schema_values(schema: dict, depth: int = 0) -> st.SearchStrategy:
    """Values of ``schema``: valid ones, at its bounds, and just past them."""
    options = []
    for variant in _variants(schema):
        if "enum" in variant:
            options.append(st.sampled_from(variant["enum"]) | st.just("not-" + str(variant["enum"][0])))
            continue
        if "const" in variant:
            options.append(st.just(variant["const"]))
            continue
        kind = variant.get("type")
        if kind == "integer":
            options.append(st.sampled_from(_integers(variant)))
        elif kind == "number":
            low, high = variant.get("minimum", 0.0), variant.get("maximum", 1.0)
            options.append(st.sampled_from(sorted({low, high, (low + high) / 2, low - 0.001, high + 0.001})))
        elif kind == "string":
            options.append(st.sampled_from(["", "x", "Hello!", "é中🎉", "\x00", "<think>", "a b\nc"]))
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "null":
            options.append(st.none())
        elif kind == "array":
            items = variant.get("items")
            inner = schema_values(items, depth + 1) if items and depth < 3 else leaf_values
            options.append(st.lists(inner, max_size=3))
        elif kind == "object" and variant.get("properties") and depth < 3:
            properties = variant["properties"]
            required = [name for name in variant.get("required", []) if name in properties]
            options.append(st.fixed_dictionaries(
                {name: property_values(name, properties[name], depth + 1) for name in required},
                optional={name: property_values(name, value, depth + 1) for name, value in properties.items()
                          if name not in required}))
        else:
            options.append(leaf_values | st.dictionaries(st.sampled_from(["a", "type"]), leaf_values, max_size=2))
    return st.one_of(options) if options else leaf_values


# ---------------------------------------------------------------------------------------------------- bodies

def _nodes(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    found = [(path, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _nodes(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:8]):
            found += _nodes(item, path + (index,))
    return found


def _set(body: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return body


@st.composite
def mutated(draw, body: Any, schema: dict) -> Any:
    nodes = _nodes(body)
    dicts = [(path, node) for path, node in nodes if isinstance(node, dict)]
    operation = draw(st.sampled_from(["replace", "replace", "delete", "unknown", "schema", "schema", "stream",
                                      "json_schema"]))
    if operation == "replace":  # not the root: non-JSON-object bodies come from the byte mangling
        path, _ = draw(st.sampled_from(nodes[1:] or nodes))
        return _set(body, path, draw(odd_values))
    if operation == "delete":
        keyed = [(node, key) for _, node in dicts for key in node]
        if keyed:
            node, key = draw(st.sampled_from(keyed))
            del node[key]
        return body
    if operation == "unknown" and dicts:
        path, node = draw(st.sampled_from(dicts))
        node[draw(key_names)] = draw(odd_values)
        return body
    if operation == "schema" and dicts:
        path, node = draw(st.sampled_from(dicts))
        properties = _properties(_schema_at(schema, path))
        if properties:
            name = draw(st.sampled_from(sorted(properties)))
            node[name] = draw(property_values(name, properties[name]) | odd_values)
        return body
    if operation == "json_schema":  # a field that holds a JSON Schema (structured output, tool parameters)
        holders = [path for path, _ in nodes if path and path[-1] in SCHEMA_FIELDS]
        if holders:
            return _set(body, draw(st.sampled_from(holders)), draw(tricky_schemas))
        return body
    if operation == "stream" and isinstance(body, dict) and "stream" in _properties(schema):
        body["stream"] = True
        if draw(st.booleans()) and "stream_options" in _properties(schema):
            body["stream_options"] = {"include_usage": draw(st.booleans())}
    return body


def _bounded_cost(path: str, body: Any) -> Any:
    """Trim valid-but-expensive requests (see the module docstring); invalid values stay as drawn."""
    if not isinstance(body, dict):
        return body
    budget = GENERATION_BUDGETS.get(path)
    if budget:
        choices = body.get("n") if type(body.get("n")) is int and 1 <= body["n"] <= 1024 else 1
        if body.get(budget) is None and any(key in body for key in ("ignore_eos", "min_tokens", "n")):
            body[budget] = 16
        for key in (budget, "max_completion_tokens"):
            value = body.get(key)
            if type(value) is int and 0 < value < CONTEXT_TOKENS and value * choices > MAX_GENERATED_TOKENS:
                body[key] = max(1, MAX_GENERATED_TOKENS // choices)
    if path in VIDEO_PATHS:
        seconds = body.get("seconds")
        if seconds is None or (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 1):
            body["seconds"] = 1
        nvext = body.get("nvext")
        if isinstance(nvext, dict):
            for key, most in (("fps", 8), ("num_frames", 8)):
                if type(nvext.get(key)) is int and nvext[key] > most:
                    nvext[key] = most
        size = body.get("size")
        if size is None or (isinstance(size, str) and re.fullmatch(r"\d+x\d+", size)
                            and math.prod(map(int, size.split("x"))) > 160 * 96):
            body["size"] = "160x96"
    return body


PIN_HEADERS = ("x-worker-instance-id", "x-dynamo-worker-instance-id", "x-prefill-instance-id",
               "x-dynamo-prefill-instance-id")
PIN_FIELDS = ("backend_instance_id", "decode_worker_id", "prefill_worker_id")


def _pinned(headers: dict, body: Any) -> bool:
    """Whether the request asks for one worker instance (a 503 when there is no such instance)."""
    if any(headers.get(name) for name in PIN_HEADERS):
        return True
    nvext = body.get("nvext") if isinstance(body, dict) else None
    return isinstance(nvext, dict) and any(nvext.get(name) is not None for name in PIN_FIELDS)


NON_JSON = [b"", b" ", b"null", b"true", b"0", b"-1", b'"x"', b"[]", b"{}", b"[{}]", b"not json", b"{", b"}",
            b"model=tiny&prompt=x", b"<xml/>", b"\x00" * 16, bytes(range(256)), b"\xef\xbb\xbf{}", b'{"model": }',
            b'{"model": "tiny",}', b"{'model': 'tiny'}", b"\xff\xfe{\x00}\x00", b"\n" * 1000]
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]
CONTENT_TYPES = [None, "application/json", "application/json", "application/json; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
                 "application/json; charset=latin-1", "*/*", ";;;", "application/octet-stream"]


def _encode(draw, body: Any) -> bytes:
    ascii_only = draw(st.booleans())
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    mangling = draw(st.sampled_from(["none"] * 16 + ["truncate", "utf8", "utf8", "non_json", "nan", "duplicate",
                                                     "trailing", "bom", "utf16", "whitespace"]))
    if mangling == "truncate" and raw:
        return raw[:draw(st.integers(0, len(raw) - 1))]
    if mangling == "utf8":
        quotes = [index for index, byte in enumerate(raw) if byte == ord('"')] or [0]
        at = draw(st.sampled_from(quotes)) + 1
        return raw[:at] + draw(st.sampled_from(BAD_UTF8)) + raw[at:]
    if mangling == "non_json":
        return draw(st.sampled_from(NON_JSON) | st.binary(max_size=64))
    if mangling == "nan":
        return re.sub(rb"(?<=: )-?\d+(\.\d+)?", draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999",
                                                                      b"01", b"0x10", b"+1", b".5"])), raw, count=1)
    if mangling == "duplicate" and raw.startswith(b"{") and len(raw) > 2:
        return b'{"model": ' + json.dumps(draw(leaf_values)).encode("utf-8", "surrogatepass") + b", " + raw[1:]
    if mangling == "trailing":
        return raw + draw(st.sampled_from([b" x", raw, b"\x00", b"}", b"\n\n"]))
    if mangling == "bom":
        return b"\xef\xbb\xbf" + raw
    if mangling == "utf16":
        return json.dumps(body).encode("utf-16")
    if mangling == "whitespace":
        return b" \t\r\n" * 100 + raw + b"\n" * 100
    return raw


def _bytes_expr(raw: bytes) -> str:
    """A short Python expression for ``raw``: long runs of one pattern as ``b"..." * n``."""
    parts, position = [], 0
    for match in re.finditer(rb"(.{1,8}?)\1{31,}", raw, re.DOTALL):
        if match.start() > position:
            parts.append(repr(raw[position:match.start()]))
        unit = match.group(1)
        parts.append(f"{unit!r} * {(match.end() - match.start()) // len(unit)}")
        position = match.end()
    if position < len(raw) or not parts:
        parts.append(repr(raw[position:]))
    return " + ".join(parts)


@dataclass
class Case:
    """One request; its repr, in every failure's message, is the reproducer (``URL``: the daemon's base URL)."""

    path: str
    body: bytes
    headers: dict[str, str | bytes] = field(default_factory=dict)
    chunked: bool = False
    pinned: bool = False
    method: str = "POST"

    def __repr__(self) -> str:
        content = _bytes_expr(self.body)
        if self.chunked:
            content = f"iter([{content}])"
        return (f"httpx.request({self.method!r}, URL + {self.path!r}, content={content}, "
                f"headers={self.headers!r}, timeout=20).text")


_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
# fields added to a path's first example, for more seeds that reach the deeper features
EXTRA_SEED_FIELDS: dict[str, list[dict[str, Any]]] = {
    "/v1/chat/completions": [
        {"tools": [_TOOL], "tool_choice": "required"},
        {"tools": [_TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}}, "stream": True},
        {"guided_json": {"type": "object", "properties": {"a": {"type": "integer"}}}},
        {"logprobs": True, "top_logprobs": 2, "n": 2, "stream": True, "stream_options": {"include_usage": True}},
        {"nvext": {"annotations": ["request_id"], "extra_fields": ["worker_id", "timing"]}, "stream": True},
    ],
    "/v1/completions": [{"echo": True, "logprobs": 2}, {"stream": True, "guided_choice": ["yes", "no"]}],
    "/v1/responses": [
        {"tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}], "tool_choice": "required"},
        {"stream": True},
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}, "stream": True},
    ],
    "/v1/messages": [
        {"tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any"}},
        {"stream": True},
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}, "stream": True},
    ],
}


def seeds(path: str) -> list[Any]:
    """The document's request examples of ``path``, and its extra seeds."""
    examples = [example["value"] for example in
                SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"].values()]
    return examples + [{**examples[0], **extra} for extra in EXTRA_SEED_FIELDS.get(path, [])]


@st.composite
def cases(draw, path: str) -> Case:
    request_body = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    body = copy.deepcopy(draw(st.sampled_from(seeds(path))))
    for _ in range(draw(st.integers(0, 3))):
        body = draw(mutated(body, request_body["schema"]))
    body = _bounded_cost(path, body)
    headers: dict[str, str | bytes] = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type is not None:
        headers["content-type"] = content_type
    extra = draw(st.sampled_from([None] * 6 + ["pin", "pin", "request-id", "encoding", "accept", "expect"]))
    if extra == "pin":
        headers[draw(st.sampled_from(PIN_HEADERS))] = draw(
            st.sampled_from(["", "0", "-1", "abc", "99999999999999999999", "x" * 4000, "%00", "tiny"]))
    elif extra == "request-id":
        headers["x-request-id"] = draw(st.sampled_from(["", "x" * 8000, "a b", "../x", "%n", "é".encode()]))
    elif extra == "encoding":
        headers["content-encoding"] = draw(st.sampled_from(["gzip", "br", "identity", "x"]))
    elif extra == "accept":
        headers["accept"] = draw(st.sampled_from(["text/event-stream", "application/xml", "", "*/*;q=0"]))
    elif extra == "expect":
        headers["expect"] = "100-continue"
    return Case(path, _encode(draw, body), headers, chunked=draw(st.integers(0, 7)) == 0,
                pinned=_pinned(headers, body))


# ---------------------------------------------------------------------------------------------------- checks

def _validator(schema: dict) -> OAS31Validator:
    return OAS31Validator({**schema, "components": SPEC["components"]})


def _response_schema(path: str, content_type: str) -> dict | None:
    content = SPEC["paths"][path]["post"]["responses"]["200"].get("content", {})
    entry = content.get(content_type)
    if entry is None:
        return None
    return entry.get("x-sse-data-schema", entry["schema"])  # a stream: the schema of each event's data


def _anthropic(path: str) -> bool:
    path = unquote(path.split("?", 1)[0])  # as the server sees it
    return path == ANTHROPIC_ROUTE or path.startswith(ANTHROPIC_ROUTE + "/")


def _shape_problem(path: str, body: Any) -> str | None:
    """Why ``body`` is not an error in the API's own shape (None: it is)."""
    if _anthropic(path):
        if not (isinstance(body, dict) and set(body) == {"type", "error"} and body["type"] == "error"):
            return "not Anthropic's {type: error, error}"
        error = body["error"]
        if not (isinstance(error, dict) and set(error) == {"type", "message"}
                and isinstance(error["type"], str) and error["type"] and isinstance(error["message"], str)):
            return "error is not {type, message}"
        return None
    if not (isinstance(body, dict) and set(body) == {"error"}):
        return "not OpenAI's {error}"
    error = body["error"]
    if not (isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}):
        return "error is not {message, type, param, code}"
    if not (isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
            and error["type"] and (error["param"] is None or isinstance(error["param"], str))
            and (error["code"] is None or isinstance(error["code"], (str, int)))):
        return "error fields have the wrong types"
    return None


def _sse(raw: bytes) -> list[tuple[str | None, str]]:
    events = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].strip())
        events.append((name, "\n".join(data)))
    return events


class Fuzzer:
    """The shared clients and the checks of one response."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.client = httpx.Client(base_url=daemon.base_url, timeout=REQUEST_TIMEOUT, headers=daemon.auth_headers)
        self.validators: dict[tuple[str, str], OAS31Validator | None] = {}
        self.children: dict[int, str] = {}
        self.http_pids: list[int] = []
        self.rss_start = 0

    def close(self) -> None:
        self.client.close()

    def validate(self, path: str, content_type: str, value: Any, what: str, case: Case) -> None:
        path = path.split("?", 1)[0]
        key = (path, content_type)
        if key not in self.validators:
            schema = _response_schema(path, content_type)
            self.validators[key] = _validator(schema) if schema else None
        validator = self.validators[key]
        if validator is not None:
            errors = sorted(validator.iter_errors(value), key=str)
            assert not errors, f"{what} does not match the document: {errors[0].message[:300]}\n{case!r}"

    def send(self, case: Case, client: httpx.Client | None = None) -> tuple[httpx.Response, bytes]:
        """The response and its whole body (a stream read to its end)."""
        content = iter([case.body]) if case.chunked else case.body
        try:
            with (client or self.client).stream(case.method, case.path, content=content,
                                                headers=case.headers) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    assert size <= READ_LIMIT, f"answer over {READ_LIMIT} bytes\n{case!r}"
        except httpx.TimeoutException as exc:
            raise AssertionError(f"no answer within {REQUEST_TIMEOUT.read} s (a hang): {exc!r}\n{case!r}") from None
        except httpx.TransportError as exc:
            raise AssertionError(f"the connection broke: {exc!r}\n{case!r}") from None
        return response, b"".join(chunks)

    def check(self, case: Case, client: httpx.Client | None = None) -> int:
        """Send ``case`` and check the answer (see the module docstring); its status."""
        response, raw = self.send(case, client)
        status = response.status_code
        content_type = response.headers.get("content-type", "")
        detail = f"{status} {content_type} {raw[:600]!r}\n{case!r}"
        sent_path = response.request.url.path  # as httpx sent it (dot segments resolved)
        unavailable = 529 if _anthropic(sent_path) else 503
        assert status < 500 or (status == unavailable and case.pinned), f"server error: {detail}"
        if case.method == "HEAD":
            return status
        if status >= 400:
            assert content_type.startswith("application/json"), f"error body is not JSON: {detail}"
            problem = _shape_problem(sent_path, json.loads(raw))
            assert problem is None, f"wrong error shape ({problem}): {detail}"
            return status
        assert status == 200, f"unexpected status: {detail}"
        if content_type.startswith("text/event-stream"):
            self.check_stream(case, raw, detail)
        elif content_type.startswith("multipart/x-mixed-replace"):
            assert raw.endswith(b"--frame--\r\n"), f"MJPEG stream not closed: {detail}"
        else:
            assert content_type.startswith("application/json"), f"unexpected content type: {detail}"
            self.validate(case.path, "application/json", json.loads(raw), "the 200 body", case)
        return status

    def check_stream(self, case: Case, raw: bytes, detail: str) -> None:
        events = _sse(raw)
        assert events, f"empty stream: {detail}"
        last_name, last_data = events[-1]
        if _anthropic(case.path):
            for name, data in events:
                event = json.loads(data)
                assert event.get("type") == name, f"event name {name} is not its type: {detail}"
                if name == "error":
                    problem = _shape_problem(case.path, event)
                    assert problem is None, f"wrong stream error shape ({problem}): {detail}"
                self.validate(case.path, "text/event-stream", event, f"event {name}", case)
            assert last_name in ("message_stop", "error"), f"stream ended with {last_name}: {detail}"
            return
        if case.path.split("?", 1)[0] == "/v1/responses":
            for name, data in events:
                event = json.loads(data)
                assert event.get("type") == name, f"event name {name} is not its type: {detail}"
                self.validate(case.path, "text/event-stream", event, f"event {name}", case)
                if name == "response.failed":
                    error = event["response"].get("error")
                    assert isinstance(error, dict) and set(error) == {"code", "message"}, \
                        f"response.failed without its error: {detail}"
            assert last_name in ("response.completed", "response.incomplete", "response.failed"), \
                f"stream ended with {last_name}: {detail}"
            return
        # chat and completions: data events, then data: [DONE]; an error is {"error": ...}; a named event is an
        # nvext annotation (any JSON)
        assert last_data == "[DONE]", f"stream did not end with [DONE]: {detail}"
        for name, data in events[:-1]:
            assert data != "[DONE]", f"data after [DONE]: {detail}"
            event = json.loads(data)
            if name is not None:
                continue
            if "error" in event:
                problem = _shape_problem(case.path, event)
                assert problem is None, f"wrong stream error shape ({problem}): {detail}"
            else:
                self.validate(case.path, "text/event-stream", event, "a chunk", case)


# ---------------------------------------------------------------------------------------------------- daemon

def _descendants(pid: int) -> dict[int, str]:
    """Every descendant process of ``pid``: pid -> kernel name (``dyn-http``, ``dyn-mocker``, ...)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        names[int(entry)] = text[text.index("(") + 1:text.rindex(")")]
        parents[int(entry)] = int(text[text.rindex(")") + 2:].split()[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = names[child]
                frontier.append(child)
    return found


def _rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return total


@pytest.fixture(scope="module")
def fuzzer(daemon):
    assert daemon.http.get("/openapi.json").json() == SPEC, "the daemon serves another document"
    fuzz = Fuzzer(daemon)
    try:
        for path in POST_PATHS:  # every seed is a valid request; lazy imports and first-use caches are not growth
            for body in seeds(path):
                case = Case(path, json.dumps(body).encode(), {"content-type": "application/json"})
                assert fuzz.check(case) == 200, case
        fuzz.children = _descendants(daemon.pid)
        fuzz.http_pids = [pid for pid, name in fuzz.children.items() if name == "dyn-http"]
        assert fuzz.http_pids, fuzz.children
        fuzz.rss_start = _rss_kib(fuzz.http_pids)
        yield fuzz
    finally:
        fuzz.close()


def _check_daemon(fuzz: Fuzzer) -> None:
    """Healthy, every child process still the one it was, the routing load released, RSS bounded."""
    health = fuzz.client.get("/health")
    assert health.status_code == 200, health.text
    alive = _descendants(fuzz.daemon.pid)
    gone = {pid: name for pid, name in fuzz.children.items() if pid not in alive}
    assert not gone, f"child processes of the daemon died (and were restarted): {gone}\n{fuzz.daemon.log_text()}"
    for model in (MODEL, *EXTRA_MODELS.values()):
        wait_routing_load_released(fuzz.daemon, model, f"the fuzzed requests to {model}")
    growth = (_rss_kib(fuzz.http_pids) - fuzz.rss_start) / 1024
    assert growth < RSS_GROWTH_MIB, f"the dyn-http processes' RSS grew by {growth:.0f} MiB"


# ---------------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("path", POST_PATHS)
def test_fuzzed_bodies(fuzzer, path):
    """Hypothesis-drawn bodies and headers for one POST endpoint: see the module docstring."""

    @settings(FUZZ_SETTINGS, max_examples=VIDEO_EXAMPLES if path in VIDEO_PATHS else MAX_EXAMPLES)
    @seed(zlib.crc32(path.encode()))  # fixed, as derandomize's, but one per path (the video aliases differ)
    @given(case=cases(path))
    def fuzz(case: Case) -> None:
        event(f"status {fuzzer.check(case)}")  # --hypothesis-show-statistics shows the mix

    fuzz()
    _check_daemon(fuzzer)


WRONG_METHODS = ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "HEAD", "FOO")


def _odd_paths(path: str) -> list[str]:
    return [path + "/", path + "/x", path + "/batches", "/" + path, path.upper(), path + "%00", path + "/..",
            path.replace("/", "//"), path + ";x", path + "%2F"]


def test_http_oddities(fuzzer, daemon):
    """What is not a body: wrong methods, paths beside the endpoints, query strings, HTTP/2, and requests
    that are not proper HTTP at all (those are answered by Granian, whose 4xx bodies are not the API's)."""
    for path in POST_PATHS:
        for method in WRONG_METHODS:
            assert fuzzer.check(Case(path, b"", method=method)) == 405, (method, path)
        for odd in _odd_paths(path):
            assert fuzzer.check(Case(odd, b"{}", {"content-type": "application/json"})) in (400, 404, 405), odd
        example = json.dumps(seeds(path)[0]).encode()
        assert fuzzer.check(Case(path + "?stream=true&model=x&%ff=%00", example)) == 200, path
    with httpx.Client(base_url=daemon.base_url, http1=False, http2=True, timeout=REQUEST_TIMEOUT,
                      headers=daemon.auth_headers) as h2:  # h2c with prior knowledge
        for path in POST_PATHS:
            for body in (json.dumps(seeds(path)[-1]).encode(), b'{"model": ', b"\xff"):
                fuzzer.check(Case(path, body, {"content-type": "application/json"}), client=h2)
    for name, payload in RAW_REQUESTS.items():
        status, body = _raw_exchange(daemon.http_port, payload)
        assert status is None or status < 500, (name, status, body[:300])
    _check_daemon(fuzzer)


_CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}).encode()


def _post(path: str, body: bytes, *headers: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode() + b"".join(h + b"\r\n" for h in headers)
            + b"Connection: close\r\n\r\n" + body)


RAW_REQUESTS = {  # name -> bytes on a fresh connection
    "content-length too small": _post("/v1/chat/completions", _CHAT, b"Content-Length: 5"),
    "content-length not a number": _post("/v1/chat/completions", _CHAT, b"Content-Length: abc"),
    "content-length negative": _post("/v1/messages", _CHAT, b"Content-Length: -1"),
    "content-length 300 MB": _post("/v1/chat/completions", _CHAT, b"Content-Length: 314572800"),
    "content-length 300 MB, Anthropic": _post("/v1/messages", _CHAT, b"Content-Length: 314572800"),
    "content-length overflow": _post("/v1/chat/completions", _CHAT, b"Content-Length: " + b"9" * 30),
    "two content-lengths": _post("/v1/chat/completions", _CHAT, b"Content-Length: %d" % len(_CHAT),
                                 b"Content-Length: 3"),
    "content-length and chunked": _post("/v1/chat/completions", b"%x\r\n" % len(_CHAT) + _CHAT + b"\r\n0\r\n\r\n",
                                        b"Content-Length: 3", b"Transfer-Encoding: chunked"),
    "bad chunk size": _post("/v1/completions", b"zz\r\n" + _CHAT + b"\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"),
    "chunked then gone": _post("/v1/chat/completions", b"12C00000\r\n" + _CHAT, b"Transfer-Encoding: chunked"),
    "transfer-encoding gzip": _post("/v1/chat/completions", _CHAT, b"Transfer-Encoding: gzip"),
    "body cut short": _post("/v1/embeddings", b'{"model": "tiny-embed"', b"Content-Length: 1000"),
    "pipelined": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(_CHAT)
                  + _CHAT) * 3 + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "HTTP/1.0 without Host": b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(_CHAT) + _CHAT,
    "absolute URI": b"POST http://elsewhere/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n" % len(_CHAT) + _CHAT,
    "lower-case method": b"post /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "OPTIONS *": b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "long path": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "1 MB header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\nConnection: close\r\n\r\n",
    "5000 headers": b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(5000))
                    + b"Connection: close\r\n\r\n",
    "NUL in the path": b"GET /v1/mo\x00dels HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "invalid UTF-8 path": b"POST /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "invalid UTF-8 headers": _post("/v1/chat/completions", _CHAT, b"Content-Length: %d" % len(_CHAT),
                                   b"x-request-id: \xff\xfe", b"x-worker-instance-id: \xc3\x28",
                                   b"authorization: Bearer \xff"),
    "media path traversal": b"GET /v1/media/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "Expect: 100-continue": _post("/v1/chat/completions", _CHAT, b"Expect: 100-continue",
                                  b"Content-Length: %d" % len(_CHAT)),
    "TLS hello": bytes.fromhex("160301002e0100002a0303") + bytes(32),
    "HTTP/2 preface then gone": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "websocket upgrade": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "not HTTP": b"THIS IS NOT HTTP\r\n\r\n",
}


def _raw_exchange(port: int, payload: bytes, wait: float = 0.5) -> tuple[int | None, bytes]:
    """Send ``payload`` on a new connection, read for at most ``wait`` s of silence, hang up; (first status, bytes)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        try:
            conn.sendall(payload)
            conn.settimeout(wait)
            while chunk := conn.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionError):
            pass
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", received) if status != b"100"]
    return (max(statuses) if statuses else None), received


STREAMS = {  # path -> a request that streams for a while (the client leaves after the first bytes)
    "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3000,
                             "ignore_eos": True, "stream": True, "n": 2},
    "/v1/completions": {"model": MODEL, "prompt": ["x", "y"], "max_tokens": 3000, "ignore_eos": True,
                        "stream": True},
    "/v1/responses": {"model": MODEL, "input": "x", "max_output_tokens": 3000, "ignore_eos": True, "stream": True},
    "/v1/messages": {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3000,
                     "ignore_eos": True, "stream": True},
    "/v1/videos/stream": {"model": "tiny-video", "prompt": "x", "seconds": 1, "size": "64x64",
                          "nvext": {"fps": 30}},
    "/v1/videos": {"model": "tiny-video", "prompt": "x", "seconds": 1, "size": "64x64", "nvext": {"fps": 30}},
}


def test_clients_that_leave(fuzzer, daemon):
    """A client gone after the first bytes of a stream, or before the answer of a unary call: the daemon
    aborts the work and releases the routing load (checked by _check_daemon)."""
    for path, body in STREAMS.items():
        with httpx.Client(base_url=daemon.base_url, timeout=REQUEST_TIMEOUT, headers=daemon.auth_headers) as client:
            try:
                with client.stream("POST", path, json=body, timeout=httpx.Timeout(0.05 if path == "/v1/videos"
                                                                                  else 20.0)) as response:
                    assert response.status_code == 200, (path, response.read())
                    next(response.iter_raw())
            except httpx.ReadTimeout:
                pass  # the unary video: left before its answer
    _check_daemon(fuzzer)
