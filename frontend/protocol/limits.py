"""Fixed limits on what one request may hold, and the JSON nesting check every front door runs before decoding.

A JSON body nested deeper than :data:`MAX_JSON_DEPTH` is refused before it is decoded: msgspec and ``json``
decode recursively (a 10,000-deep array raised ``RecursionError``, a 500), and so do what reads the decoded
values later (chat templates over tool schemas, JSON Schema checks). The configurable per-request limits (stop
strings, tools, messages) are options (``config/options.py``, group ``limits``); README "Limits" lists both.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

MAX_JSON_DEPTH = 128  # nesting of arrays and objects in a request body (OpenAI's structured outputs allow 10)
MAX_STOP_TOKEN_IDS = 1024  # stop_token_ids of one request (vLLM's field; the engine checks each output token)

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string (unrolled: no backtracking blow-up)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_PAIR = re.compile(rb"\[\]|\{\}")
_SIGN = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # opening +1, closing -1 (as signed bytes)
_CHUNK = 1 << 16  # brackets summed at a time (a deep body is found in its first chunk)


def json_depth_exceeds(body: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text ``body`` nests arrays and objects more than ``limit`` levels deep.

    Brackets inside strings do not count. Linear in the body's length, and nearly free for the usual body: when
    it has no more than ``limit`` opening brackets at all it cannot nest deeper (two ``bytes.count``). Otherwise
    strings are cut out and the brackets kept (both in C); passes that remove every innermost ``[]``/``{}`` pair
    (one level each, in C) run while each removes at least a quarter of what is left (a shallow body is gone in
    a few), and what is left is measured with running sums, a chunk at a time. A body that is not JSON may give
    either answer: the decoder reports it.
    """
    data = body.encode() if isinstance(body, str) else body
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    passes = 0
    while True:
        before = len(brackets)
        brackets, removed = _PAIR.subn(b"", brackets)
        if not brackets or not removed:  # all matched: as deep as the passes; none matched: not JSON
            return False
        passes += 1
        if passes > limit:
            return True
        if 8 * removed < before:  # under a quarter of the bytes removed (2 a pair): sum the rest instead
            break
    signs = array("b", brackets.translate(_SIGN))
    level = 0
    for start in range(0, len(signs), _CHUNK):
        chunk = signs[start:start + _CHUNK]
        if max(accumulate(chunk, initial=level)) > limit - passes:
            return True
        level += sum(chunk)
    return False


def depth_problem(limit: int = MAX_JSON_DEPTH) -> str:
    """The 400's message for a body nested too deeply."""
    return f"request body nests JSON arrays/objects more than {limit} levels deep"
