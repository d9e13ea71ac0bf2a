"""Parser names (as Dynamo's ``--dyn-tool-call-parser`` / ``--dyn-reasoning-parser``) and building a request's chain."""

from __future__ import annotations

from typing import Callable

from ..config.parser_names import HARMONY_REASONING, HARMONY_TOOLS
from . import deepseek, harmony, hermes, kimi_k2, llama3_json, mistral, pythonic, qwen3_coder, think
from .base import OutputParser
from .chain import ParseChain
from .context import ParserContext
from .forced import ForcedToolParser

Factory = Callable[[ParserContext], OutputParser]

TOOL_PARSERS: dict[str, Factory] = {
    "hermes": hermes.make,
    "qwen3_coder": qwen3_coder.make,
    "llama3_json": llama3_json.make,
    "pythonic": pythonic.make,
    "mistral": mistral.make,
    "deepseek_v3": deepseek.make,
    "kimi_k2": kimi_k2.make,
    HARMONY_TOOLS: harmony.make_tool_parser,
}
REASONING_PARSERS: dict[str, Factory] = {
    "deepseek_r1": think.make_deepseek_r1,
    "qwen3": think.make_qwen3,
    "granite": think.make_granite,
    HARMONY_REASONING: harmony.make_reasoning_parser,
}


def build_chain(tool_parser: str, reasoning_parser: str, context: ParserContext, *, tools_active: bool,
                forced_function: str | None = None, forced: bool = False,
                parallel_tool_calls: bool = True) -> ParseChain | None:
    """The request's parsers, or None when nothing is to be parsed (the fast path).

    ``tools_active``: the request has tools and ``tool_choice`` is not ``none``. ``forced``: ``tool_choice``
    is ``required`` or names ``forced_function``. Unknown names are ignored (configuration checks them).
    """
    parsers: list[OutputParser] = []
    harmony_tools = tool_parser == HARMONY_TOOLS
    if reasoning_parser == HARMONY_REASONING or harmony_tools:
        parsers.append(harmony.HarmonyParser(reasoning_enabled=reasoning_parser == HARMONY_REASONING,
                                             tools_enabled=tools_active and harmony_tools))
    elif reasoning_parser in REASONING_PARSERS:
        parsers.append(REASONING_PARSERS[reasoning_parser](context))
    tool_factory = TOOL_PARSERS.get(tool_parser) if tools_active and not harmony_tools else None
    if forced and tools_active:
        inner = tool_factory(context) if tool_factory is not None else None
        if harmony_tools:  # harmony already produced the calls; only guided JSON remains to be read
            inner = None
        parsers.append(ForcedToolParser(inner, forced_function))
    elif tool_factory is not None:
        parsers.append(tool_factory(context))
    if not parsers:
        return None
    return ParseChain(parsers, parallel_tool_calls)
