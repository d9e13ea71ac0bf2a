"""Structured output: the request's ``response_format`` / ``guided_*`` fields, validated, as the engine's
:class:`~frontend.protocol.engine.GuidedDecoding`.

At most one constraint per request (400 otherwise, naming both fields):

* ``response_format: {"type": "json_object"}`` -> ``json={"type": "object"}``;
* ``response_format: {"type": "json_schema", "json_schema": {"schema": ...}}`` and ``guided_json`` (an object,
  or a JSON string of one) -> ``json``: the schema must be a JSON Schema object (checked against its draft's
  meta-schema, 2020-12 unless ``$schema`` names another);
* ``guided_regex`` -> ``regex`` (must compile as a Python regular expression);
* ``guided_choice`` -> ``choice`` (a non-empty list of strings);
* ``guided_grammar`` -> ``grammar`` (non-empty; its syntax is the engine's backend's business).

``response_format: {"type": "text"}`` is no constraint. ``guided_decoding_backend`` and
``guided_whitespace_pattern`` are passed through. Dynamo's deprecated ``nvext.guided_*`` copies apply when
no root-level constraint is given.

A forced tool call (``tool_choice`` naming a function, or ``required``) is a constraint too: the output is the
call, and ``chat_session.py`` gives the engine its schema. With structured output (:func:`check_forced_call`):

* ``response_format`` json_schema / json_object (the Responses API's ``text.format``, Anthropic's
  ``output_config.format``) and a call to one function (named, or ``required`` with one tool) are accepted: the
  call's constraint wins, and the function's arguments are the structured output (instructor's RESPONSES_TOOLS
  mode sends both, the tool's parameters and the format being the same schema);
* ``response_format`` with ``required`` and several tools is a 400 naming the format field the client sent: the
  model may call any of the tools, whose arguments cannot all be the one format;
* ``guided_*`` (and their ``nvext`` copies) with any forced call is a 400 naming ``tool_choice``: they constrain
  the output text, which is the call's JSON.

Errors about ``response_format`` name the field as the front door calls it (``names``, e.g. ``text.format``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import msgspec

from ..protocol.engine import GuidedDecoding
from ..protocol.errors import InvalidRequest
from ..protocol.limits import depth_problem, json_depth_exceeds
from ..protocol.openai import (ChatCompletionRequest, CompletionRequest, NvExt, ResponseFormat,
                               ResponseFormatJsonObject, ResponseFormatJsonSchema, ResponseFormatText)

JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}
MAX_SCHEMA_DEPTH = 128  # nesting of a JSON Schema's objects and arrays (engines cap grammar nesting too)
SCHEMA_FIELD = "response_format.json_schema.schema"


def guided_decoding(request: ChatCompletionRequest | CompletionRequest, nvext: NvExt | None,
                    names: Mapping[str, str] | None = None) -> GuidedDecoding | None:
    """The request's structured-output constraint, validated; None when it has none. ``names``: the front door's
    names of ``response_format`` and ``response_format.json_schema.schema``, for its 400s."""
    if request.response_format is None and request.guided_json is None and request.guided_regex is None \
            and request.guided_choice is None and request.guided_grammar is None and nvext is None:
        return None  # the common case, checked first
    found: list[tuple[str, GuidedDecoding]] = []
    names = names or {}
    format_param = names.get("response_format", "response_format")
    response_format = _response_format(request.response_format)
    if isinstance(response_format, ResponseFormatJsonObject):
        found.append((format_param, GuidedDecoding(json=dict(JSON_OBJECT_SCHEMA))))
    elif isinstance(response_format, ResponseFormatJsonSchema):
        schema = response_format.json_schema.schema
        schema_param = names.get(SCHEMA_FIELD, SCHEMA_FIELD)
        if schema is None:
            raise InvalidRequest("response_format json_schema needs json_schema.schema (a JSON Schema object)",
                                 param=schema_param)  # the other doors check their schema field first
        found.append((format_param, GuidedDecoding(json=check_schema(schema, schema_param))))
    root = _guided_fields(request.guided_json, request.guided_regex, request.guided_choice, request.guided_grammar,
                          "")
    if not found and not root and nvext is not None:
        root = _guided_fields(nvext.guided_json, nvext.guided_regex, nvext.guided_choice, nvext.guided_grammar,
                              "nvext.")
    found += root
    if not found:
        return None
    if len(found) > 1:
        given = ", ".join(name for name, _ in found)
        raise InvalidRequest(f"only one structured-output constraint may be given per request, got {given}",
                             param=found[1][0])
    guided = found[0][1]
    guided.backend = request.guided_decoding_backend or (nvext.guided_decoding_backend if nvext else None)
    guided.whitespace_pattern = request.guided_whitespace_pattern
    return guided


def check_forced_call(request: ChatCompletionRequest, guided: GuidedDecoding | None, one_function: bool,
                      names: Mapping[str, str] | None = None) -> None:
    """A forced tool call with the request's structured output ``guided``: a 400 where they contradict (see the
    module docstring); ``one_function``: the call can only be to one function."""
    if guided is None:
        return
    if not isinstance(_response_format(request.response_format), (ResponseFormatJsonObject,
                                                                   ResponseFormatJsonSchema)):
        raise InvalidRequest("guided_* structured output cannot be combined with tool_choice required or a named "
                             "function: the output is the tool call", param="tool_choice")
    if not one_function:
        param = (names or {}).get("response_format", "response_format")
        raise InvalidRequest(f"{param} cannot be combined with tool_choice required and several tools: name the "
                             "function whose arguments are the structured output", param=param)


def _response_format(value: Any) -> ResponseFormat | None:
    """The typed response_format (the Responses and Anthropic translations may hand over a plain dict)."""
    if value is None or isinstance(value, (ResponseFormatText, ResponseFormatJsonObject,
                                           ResponseFormatJsonSchema)):
        return value
    try:
        return msgspec.convert(value, ResponseFormat)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid response_format: {exc}", param="response_format") from None


def _guided_fields(json_schema: dict[str, Any] | str | None, regex: str | None, choice: list[str] | None,
                   grammar: str | None, prefix: str) -> list[tuple[str, GuidedDecoding]]:
    found = []
    if json_schema is not None:
        param = prefix + "guided_json"
        if isinstance(json_schema, str):
            if json_depth_exceeds(json_schema):
                raise InvalidRequest(depth_problem(param), param=param)
            try:
                json_schema = msgspec.json.decode(json_schema)
            except msgspec.DecodeError:
                raise InvalidRequest(f"{param} is a string but not JSON; give a JSON Schema object",
                                     param=param) from None
        found.append((param, GuidedDecoding(json=check_schema(json_schema, param))))
    if regex is not None:
        param = prefix + "guided_regex"
        if not regex:
            raise InvalidRequest(f"{param} must not be empty", param=param)
        try:
            re.compile(regex)
        except re.error as exc:
            raise InvalidRequest(f"{param} is not a valid regular expression: {exc}", param=param) from None
        found.append((param, GuidedDecoding(regex=regex)))
    if choice is not None:
        param = prefix + "guided_choice"
        if not choice or any(not option for option in choice):
            raise InvalidRequest(f"{param} must be a non-empty list of non-empty strings", param=param)
        found.append((param, GuidedDecoding(choice=list(choice))))
    if grammar is not None:
        param = prefix + "guided_grammar"
        if not grammar.strip():
            raise InvalidRequest(f"{param} must not be empty", param=param)
        found.append((param, GuidedDecoding(grammar=grammar)))
    return found


def check_schema(schema: Any, param: str) -> dict[str, Any]:
    """``schema`` if it is a valid JSON Schema object, else a 400 naming ``param`` and the problem."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object, got {type(schema).__name__}", param=param)
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise InvalidRequest(f"{param} is nested more than {MAX_SCHEMA_DEPTH} levels deep", param=param)
    if not isinstance(schema.get("$schema", ""), str):
        raise InvalidRequest(f"{param}: $schema must be a string (a meta-schema URI)", param=param)
    from jsonschema.exceptions import SchemaError  # imported on first use: about 60 ms
    from jsonschema.validators import Draft202012Validator, validator_for

    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path)
        at = f" at `{where}`" if where else ""
        raise InvalidRequest(f"{param} is not a valid JSON Schema: {exc.message}{at}", param=param) from None
    return schema


def _depth(value: Any, level: int = 0) -> int:
    """How deeply dicts and lists nest in ``value`` (stops counting past the limit)."""
    if level > MAX_SCHEMA_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(item, level + 1) for item in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(item, level + 1) for item in value), default=level + 1)
    return level
