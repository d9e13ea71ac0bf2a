"""A chat request from validation to running generations with their output parsers.

Shared by the three chat front doors: ``/v1/chat/completions`` decodes the client's body, ``/v1/responses``
and ``/v1/messages`` translate theirs into a :class:`ChatCompletionRequest` first. The session validates the
tool fields, ``nvext`` and the structured-output fields, renders and tokenizes the prompt (or takes
``nvext.token_data``, or the raw messages with ``nvext.use_raw_prompt``), picks the model's parsers
(``ApiSettings.parsers_for``), builds the engine requests (a JSON schema for forced tool calls, the reasoning
budget) and starts one :class:`Generation` per choice (``n``), each with its own parse chain.
:func:`collect_chat` reads the whole answer for the unary APIs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import msgspec

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..kv import block_hashes as compute_block_hashes
from ..parsers.base import CONTENT, TOOL_CALL, Segment, content
from ..parsers.chain import ParseChain
from ..parsers.context import ParserContext
from ..parsers.forced import forced_response_format
from ..parsers.registry import build_chain
from ..protocol.engine import GuidedDecoding, TokenLogprob
from ..protocol.errors import InvalidRequest
from ..protocol.openai import ChatCompletionRequest, Usage
from .disconnect import DisconnectSource
from .generation import Choices, Generation, collect_all, engine_request, reject_unsupported
from .guided import check_forced_call, guided_decoding
from .nvext import Extensions, check_token_ids, extensions, raw_chat_prompt
from .prepare import check_limits, served_model

PROMPT_TAIL_TOKENS = 16  # decoded for the reasoning parsers: did the template open a thinking block?


@dataclass(frozen=True)
class ToolChoice:
    """What the request's ``tools`` / ``tool_choice`` ask for."""

    active: bool = False  # tools are offered to the model (and its output is parsed for calls)
    forced: bool = False  # ``required`` or a named function
    function: str | None = None  # the named function
    definitions: list[dict[str, Any]] = field(default_factory=list)


def tool_choice_of(request: ChatCompletionRequest) -> ToolChoice:
    """Validate ``tools`` and ``tool_choice`` (400 naming the field)."""
    definitions = [msgspec.to_builtins(tool.function) for tool in request.tools or []]
    choice = request.tool_choice
    if choice is None:
        choice = "auto" if definitions else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest("tool_choice must be none, auto, required or a named function",
                                 param="tool_choice")
        if choice == "required" and not definitions:
            raise InvalidRequest("tool_choice required needs tools", param="tool_choice")
        return ToolChoice(bool(definitions) and choice != "none", choice == "required", None, definitions)
    function = choice.get("function") if choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest('a named tool_choice is {"type": "function", "function": {"name": ...}}',
                             param="tool_choice")
    if name not in {definition["name"] for definition in definitions}:
        raise InvalidRequest(f"tool_choice names function `{name}`, which is not in tools", param="tool_choice")
    return ToolChoice(True, True, name, definitions)


class SessionChoice:
    """One choice of a chat session: its generation and parse chain."""

    __slots__ = ("index", "generation", "chain")

    def __init__(self, index: int, generation: Generation, chain: ParseChain | None) -> None:
        self.index = index
        self.generation = generation
        self.chain = chain

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the output, if one did."""
        pipeline = self.generation.pipeline
        return pipeline.stop.stopped_by if pipeline.stopped_by_string and pipeline.stop is not None else None

    def finish_reason(self, reason: str) -> str:
        """The engine's reason, as ``tool_calls`` when the output ended with calls."""
        if reason == "stop" and self.chain is not None and self.chain.tool_calls:
            return "tool_calls"
        return reason


class ChatSession:
    """A running chat request and what its answer needs (choices with their parsers, ids, model name).

    ``generation``, ``chain``, ``stop_sequence`` and ``finish_reason`` are choice 0's (the Responses and
    Anthropic APIs have one choice).
    """

    __slots__ = ("runs", "choices", "generation", "chain", "model", "request_id", "ext", "prompt_ids")

    def __init__(self, choices: Choices, model: ServedModel, request_id: str, chains: list[ParseChain | None],
                 ext: Extensions, prompt_ids: list[int]) -> None:
        self.runs = choices
        generations = choices.groups[0]  # one prompt
        self.choices = [SessionChoice(0, generations[0], chains[0])] if len(generations) == 1 else \
            [SessionChoice(i, generation, chain) for i, (generation, chain) in enumerate(zip(generations, chains))]
        self.generation = self.choices[0].generation
        self.chain = self.choices[0].chain
        self.model = model
        self.request_id = request_id
        self.ext = ext
        self.prompt_ids = prompt_ids

    @property
    def stop_sequence(self) -> str | None:
        return self.choices[0].stop_sequence

    def finish_reason(self, reason: str) -> str:
        return self.choices[0].finish_reason(reason)

    def usage(self) -> Usage:
        """The prompt once, the output of every choice."""
        return self.runs.usage()

    def close(self) -> None:
        """Release every choice's generation not released yet (see ``Choices.close``)."""
        self.runs.close()

    async def __aenter__(self) -> "ChatSession":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


async def open_session(gateway: Gateway, request: ChatCompletionRequest, body: bytes, headers: Mapping[str, str],
                       disconnected: DisconnectSource | None, names: Mapping[str, str] | None = None) -> ChatSession:
    """Validate, tokenize and start the generations; ``body`` is the request as JSON for the tokenizer. ``names``:
    the door's own names of fields whose limits are checked (``prepare.check_limits``) and of ``response_format``
    (``guided.py``), for its 400s."""
    check_limits(request, gateway.settings.limits, len(body), names)
    ext = extensions(request, headers, gateway.settings.apis.nvext)
    reject_unsupported(request)
    if not request.messages:
        raise InvalidRequest("messages must contain at least one message", param="messages")
    tools = tool_choice_of(request)
    guided = _constraint(request, tools, ext, names)
    model = served_model(gateway, request.model, "chat")
    if ext.token_data is None and not ext.raw_prompt:
        prompt_ids, block_hashes = await gateway.tokenizer.tokenize(model.files_path, "chat", body,
                                                                    model.block_size)
    else:
        prompt_ids, block_hashes = await _given_prompt(gateway, model, request, ext)
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    max_tokens = request.max_completion_tokens or request.max_tokens
    chains: list[ParseChain | None] = []
    make_chain = _chain_factory(gateway, model, request, tools, prompt_ids)

    def parser() -> ParseChain | None:  # one chain per choice: chains keep state
        chain = make_chain() if make_chain is not None else None
        chains.append(chain)
        return chain

    if make_chain is None:
        chains = [None] * request.n
    choices = Choices(disconnected).start(
        gateway, model, request, [prompt_ids], [block_hashes],
        lambda ids, i: engine_request(gateway, request, model, ids, max_tokens, logprobs, ext=ext, guided=guided,
                                      choice=i),
        pinned=ext.pinned, ext=ext, parser=parser if make_chain is not None else None)
    return ChatSession(choices, model, choices.groups[0][0].stream.request_id, chains, ext, prompt_ids)


def _constraint(request: ChatCompletionRequest, tools: ToolChoice, ext: Extensions,
                names: Mapping[str, str] | None) -> GuidedDecoding | None:
    """The engine's structured-output constraint: a forced call's JSON schema (for engines with guided decoding),
    which wins over a ``response_format`` it can satisfy (``guided.py``), else the request's own."""
    guided = guided_decoding(request, ext.nvext, names)
    if not tools.forced:
        return guided
    check_forced_call(request, guided, tools.function is not None or len(tools.definitions) == 1, names)
    schema = forced_response_format(tools.definitions, tools.function, request.parallel_tool_calls is not False)
    return GuidedDecoding(json=schema["json_schema"]["schema"])


async def _given_prompt(gateway: Gateway, model: ServedModel, request: ChatCompletionRequest,
                        ext: Extensions) -> tuple[list[int], bytes]:
    """The prompt's token ids and block hashes from nvext.token_data, or the raw messages (use_raw_prompt)."""
    if ext.token_data is not None:
        check_token_ids(ext.token_data, model.tokenizer.get_vocab_size(), "nvext.token_data")
        return list(ext.token_data), compute_block_hashes(ext.token_data, model.block_size).tobytes()
    raw = msgspec.json.encode({"prompt": raw_chat_prompt(request), "add_special_tokens": False})
    prompt_ids, hashes = await gateway.tokenizer.tokenize(model.files_path, "completion", raw, model.block_size)
    if not prompt_ids:
        raise InvalidRequest("nvext.use_raw_prompt: the messages have no text", param="messages")
    return prompt_ids, hashes


def _chain_factory(gateway: Gateway, model: ServedModel, request: ChatCompletionRequest, tools: ToolChoice,
                   prompt_ids: list[int]) -> Callable[[], ParseChain | None] | None:
    """Makes one parse chain per choice (chains keep state); None when there is nothing to parse."""
    tool_parser, reasoning_parser = gateway.settings.apis.parsers_for(model.card)
    if not reasoning_parser and not (tools.active and (tool_parser or tools.forced)):
        return None  # nothing to parse: the plain fast path
    kwargs = request.chat_template_kwargs or {}
    thinking = kwargs.get("enable_thinking")
    tail = model.tokenizer.decode(prompt_ids[-PROMPT_TAIL_TOKENS:], skip_special_tokens=False) \
        if reasoning_parser else ""
    context = ParserContext(tools.definitions, tail, thinking if isinstance(thinking, bool) else None)
    return lambda: build_chain(tool_parser, reasoning_parser, context, tools_active=tools.active,
                               forced=tools.forced, forced_function=tools.function,
                               parallel_tool_calls=request.parallel_tool_calls is not False)


@dataclass
class ChatOutcome:
    """A whole generation: merged segments, mapped finish reason, logprobs, stop string, usage."""

    segments: list[Segment]
    finish_reason: str
    logprobs: list[TokenLogprob]
    stop_sequence: str | None
    usage: Usage

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments if segment.kind == CONTENT)

    def joined(self, kind: int) -> str:
        return "".join(segment.text for segment in self.segments if segment.kind == kind)

    @property
    def tool_calls(self) -> list[Segment]:
        return [segment for segment in self.segments if segment.kind == TOOL_CALL]


async def collect_chat(session: ChatSession) -> list[ChatOutcome] | None:
    """Run every choice to its end, concurrently (a worker's failure raised); None when the client went away.
    Each outcome's usage is the whole request's."""
    collected = await collect_all([choice.generation for choice in session.choices])
    if collected is None:
        return None
    usage = session.usage()
    return [ChatOutcome(whole.segments if whole.segments is not None else segments_of(None, whole.text),
                        choice.finish_reason(whole.finish_reason), whole.logprobs, choice.stop_sequence, usage)
            for choice, whole in zip(session.choices, collected)]


def segments_of(segments: list[Segment] | None, text: str) -> list[Segment]:
    """A delta's segments; a delta without a parser is all content."""
    if segments is not None:
        return segments
    return [content(text)] if text else []
