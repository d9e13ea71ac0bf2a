"""Anthropic Messages API wire types (``/v1/messages``, ``/v1/messages/count_tokens``): request, content
blocks, the message response, streamed events and the error body."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .openai import PositiveInt, Probability

# ---- request content blocks ----------------------------------------------------------------------


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str
    citations: Any = None
    cache_control: Any = None


class ImageSource(msgspec.Struct):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ImageBlock(msgspec.Struct, tag="image", tag_field="type"):
    source: ImageSource
    cache_control: Any = None


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: Any = None


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool = False
    cache_control: Any = None


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str


class DocumentBlock(msgspec.Struct, tag="document", tag_field="type"):
    source: Any = None


RequestBlock = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock \
    | DocumentBlock


class InputMessage(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[RequestBlock]


class ToolDefinition(msgspec.Struct, omit_defaults=True):
    """A client tool; server tools (a ``type`` such as ``web_search_20250305``) are a 400."""

    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None
    cache_control: Any = None


class ToolChoice(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(msgspec.Struct):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class Metadata(msgspec.Struct):
    user_id: str | None = None


class OutputFormat(msgspec.Struct):
    type: Literal["json_schema"]
    schema: dict[str, Any]


class OutputConfig(msgspec.Struct):
    """Structured output (``format``, passed to the worker as a JSON schema) and ``effort``."""

    effort: str | None = None
    format: OutputFormat | None = None


class _MessageFields(msgspec.Struct, kw_only=True):
    """What /v1/messages and /v1/messages/count_tokens share."""

    model: str
    messages: list[InputMessage]
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(_MessageFields, kw_only=True):
    """POST /v1/messages."""

    max_tokens: PositiveInt
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    metadata: Metadata | None = None
    service_tier: str | None = None


class CountTokensRequest(_MessageFields, kw_only=True):
    """POST /v1/messages/count_tokens."""


class TokenCount(msgspec.Struct):
    input_tokens: int


# ---- response ------------------------------------------------------------------------------------


class TextContent(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ThinkingContent(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""


class ToolUseContent(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = TextContent | ThinkingContent | ToolUseContent


class MessageUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(msgspec.Struct):
    """The unary answer, and the ``message`` of ``message_start``."""

    id: str
    model: str
    content: list[ContentBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: MessageUsage
    type: str = "message"
    role: str = "assistant"


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="type"):
    text: str


class InputJsonDelta(msgspec.Struct, tag="input_json_delta", tag_field="type"):
    partial_json: str


class ThinkingDelta(msgspec.Struct, tag="thinking_delta", tag_field="type"):
    thinking: str


BlockDelta = TextDelta | InputJsonDelta | ThinkingDelta


class StopDelta(msgspec.Struct):
    stop_reason: str | None
    stop_sequence: str | None


class MessageStart(msgspec.Struct, tag="message_start", tag_field="type"):
    message: Message


class ContentBlockStart(msgspec.Struct, tag="content_block_start", tag_field="type"):
    index: int
    content_block: ContentBlock


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


class ContentBlockDelta(msgspec.Struct, tag="content_block_delta", tag_field="type"):
    index: int
    delta: BlockDelta


class ContentBlockStop(msgspec.Struct, tag="content_block_stop", tag_field="type"):
    index: int


class MessageDelta(msgspec.Struct, tag="message_delta", tag_field="type"):
    delta: StopDelta
    usage: MessageUsage


class MessageStop(msgspec.Struct, tag="message_stop", tag_field="type"):
    pass


class ErrorInfo(msgspec.Struct):
    type: str
    message: str


class ErrorBody(msgspec.Struct, tag="error", tag_field="type"):
    """Every error, as a JSON body or as the ``error`` event of a stream."""

    error: ErrorInfo


StreamEvent = MessageStart | ContentBlockStart | Ping | ContentBlockDelta | ContentBlockStop | MessageDelta \
    | MessageStop | ErrorBody
