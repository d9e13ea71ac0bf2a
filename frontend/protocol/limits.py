"""Fixed limits on what one request may hold, and the JSON nesting check every front door runs before decoding.

A JSON body nested deeper than :data:`MAX_JSON_DEPTH` is refused before it is decoded: msgspec and ``json``
decode recursively (a 10,000-deep array raised ``RecursionError``, a 500), and so do what reads the decoded
values later (chat templates over tool schemas, JSON Schema checks). The configurable per-request limits (stop
strings, tools, messages) are options (``config/options.py``, group ``limits``); README "Limits" lists both.
"""

from __future__ import annotations

from array import array
from itertools import accumulate

MAX_JSON_DEPTH = 128  # nesting of arrays and objects in a request body (OpenAI's structured outputs allow 10)
MAX_STOP_TOKEN_IDS = 1024  # stop_token_ids of one request (vLLM's field; the engine checks each output token)

_NOT_SYNTAX = bytes(b for b in range(256) if b not in b'"[]{}')
_PARENS = bytes.maketrans(b"[{]}", b"(())")  # both kinds count alike
_SIGN = bytes.maketrans(b"()", b"\x01\xff")  # opening +1, closing -1 (as signed bytes)
_CHUNK = 1 << 16  # most brackets summed at a time


def json_depth_exceeds(body: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text ``body`` nests arrays and objects more than ``limit`` levels deep.

    Brackets inside strings do not count. Linear in the body's length, and nearly free for the usual body: when
    it has no more than ``limit`` opening brackets at all it cannot nest deeper (two ``bytes.count``). Otherwise
    only quotes and brackets are kept and the brackets inside strings dropped (in C); passes that remove every
    innermost pair (one level each, in C) run while each removes at least a quarter of what is left (a shallow
    body is gone in a few), and what is left is measured with running sums, a chunk at a time. A body that is not
    JSON may give either answer: the decoder reports it.
    """
    data = body.encode() if isinstance(body, str) else body
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    if b"\\" in data:  # escaped backslashes, then escaped quotes: what is left of `"` opens or closes a string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = data.translate(None, _NOT_SYNTAX)  # quotes and brackets only
    if b'""' in marks:  # two adjacent quotes have no bracket between them (an empty string, or no value between)
        marks = marks.replace(b'""', b"")
    if b'"' in marks:  # strings with brackets in them: keep what is outside
        marks = b"".join(marks.split(b'"')[::2])
    parens = marks.translate(_PARENS)
    passes = 0
    while True:
        before = len(parens)
        parens = parens.replace(b"()", b"")  # every innermost pair: one level (the result is not rescanned)
        removed = (before - len(parens)) // 2
        if not removed:  # unbalanced: not JSON
            return False
        passes += 1
        if passes > limit or not parens:  # all matched: exactly `passes` levels deep
            return passes > limit
        if 8 * removed < before:  # under a quarter of the bytes went: sum the rest instead
            break
    signs = array("b", parens.translate(_SIGN))
    level = start = 0
    size = max(2 * limit, 256)  # growing chunks: a deep body is found in its first one
    while start < len(signs):
        chunk = signs[start:start + size]
        if max(accumulate(chunk, initial=level)) > limit - passes:
            return True
        level += sum(chunk)
        start += size
        size = min(2 * size, _CHUNK)
    return False


def depth_problem(subject: str = "the request body", limit: int = MAX_JSON_DEPTH) -> str:
    """The 400's message for JSON nested too deeply."""
    return f"{subject} nests JSON arrays and objects more than {limit} levels deep"
