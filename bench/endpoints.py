"""The OpenAI wire format of each endpoint type: request bodies, and the text and usage of responses.

Bodies follow the OpenAI API (``max_tokens``, ``stream_options.include_usage``) plus ``ignore_eos`` when an
output length is asked for, which vLLM, SGLang, Dynamo and this frontend honour; ``--extra-inputs`` fields
are merged last and win. Response decoding is lenient: unknown fields are ignored, and a streamed event's
text is its ``delta.content`` (chat), ``text`` (completions) or reasoning text (``reasoning_content`` or
``reasoning``), which count as content for TTFT as in AIPerf.
"""

from __future__ import annotations

import msgspec

from .config import ProfileConfig
from .workloads import Session


class Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class Choice(msgspec.Struct):
    delta: Delta | None = None
    message: Delta | None = None
    text: str | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ErrorBody(msgspec.Struct):
    message: str = ""
    type: str | None = None


class Response(msgspec.Struct):
    """A unary response body or one streamed event (``data:`` payload)."""

    choices: list[Choice] = []
    usage: Usage | None = None
    error: ErrorBody | str | None = None
    data: list[msgspec.Raw] | None = None  # embeddings


RESPONSE_DECODER = msgspec.json.Decoder(Response)


def decode(body: bytes) -> Response:
    """Decode a response body or event; raises msgspec.DecodeError on malformed JSON."""
    return RESPONSE_DECODER.decode(body)


def text_of(response: Response) -> str:
    """The generated text an event or body carries (all choices, content and reasoning)."""
    parts = []
    for choice in response.choices:
        if choice.text:
            parts.append(choice.text)
        for delta in (choice.delta, choice.message):
            if delta is not None:
                parts.extend(p for p in (delta.reasoning_content, delta.reasoning, delta.content) if p)
    return "".join(parts)


def error_text(response: Response) -> str | None:
    """The error message of an in-band error object (``{"error": ...}``), if there is one."""
    if response.error is None:
        return None
    if isinstance(response.error, str):
        return response.error
    return response.error.message or response.error.type or "error"


def chat_messages(session: Session, turn: int, answers: list[str]) -> list[dict[str, str]]:
    """System prompt, then every earlier user message and answer, then this turn's user message."""
    messages = [{"role": "system", "content": session.system}] if session.system else []
    for index in range(turn):
        messages.append({"role": "user", "content": session.turns[index].text})
        messages.append({"role": "assistant", "content": answers[index]})
    messages.append({"role": "user", "content": session.turns[turn].text})
    return messages


def completion_prompt(session: Session, turn: int, answers: list[str]) -> str:
    """The same history as one prompt string, parts separated by blank lines."""
    parts = [session.system] if session.system else []
    for index in range(turn):
        parts += [session.turns[index].text, answers[index]]
    parts.append(session.turns[turn].text)
    return "\n\n".join(parts)


def request_body(config: ProfileConfig, session: Session, turn: int, answers: list[str]) -> bytes:
    """The JSON body for turn ``turn`` of ``session``, given the answers to its earlier turns."""
    body: dict[str, object] = {"model": config.model}
    if config.endpoint_type == "embeddings":
        body["input"] = session.turns[turn].text
    else:
        if config.endpoint_type == "chat":
            body["messages"] = chat_messages(session, turn, answers)
        else:
            body["prompt"] = completion_prompt(session, turn, answers)
        max_tokens = session.turns[turn].max_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
            if config.ignore_eos:
                body["ignore_eos"] = True
        body["stream"] = config.streaming
        if config.streaming:
            body["stream_options"] = {"include_usage": True}
    body.update(config.extra_inputs)
    return msgspec.json.encode(body)
