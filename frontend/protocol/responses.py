"""OpenAI Responses API wire types (``/v1/responses``): the request, input items, the response object and
the streamed events.

Input items are decoded in two steps: the body gives a list of objects, and each is converted to its typed
item by its ``type`` (a message when it has a ``role`` and no type), so that an error names ``input[i]``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .openai import PositiveInt, Probability, Temperature

# ---- request -------------------------------------------------------------------------------------


class TextFormat(msgspec.Struct, omit_defaults=True):
    """``text.format``: text, json_object or json_schema (name, schema, strict)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, omit_defaults=True):
    format: TextFormat = msgspec.field(default_factory=TextFormat)
    verbosity: str | None = None


class ReasoningConfig(msgspec.Struct):
    effort: str | None = None
    summary: str | None = None


class FunctionTool(msgspec.Struct, omit_defaults=True):
    """A function tool (the only kind served); other tool types are a 400."""

    type: str
    name: str = ""
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesRequest(msgspec.Struct, kw_only=True):
    """POST /v1/responses."""

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    nvext: dict[str, Any] | None = None


# ---- input items ---------------------------------------------------------------------------------


class InputText(msgspec.Struct, tag="input_text", tag_field="type"):
    text: str


class OutputText(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []


class Refusal(msgspec.Struct, tag="refusal", tag_field="type"):
    refusal: str


class InputImage(msgspec.Struct, tag="input_image", tag_field="type"):
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(msgspec.Struct, tag="input_file", tag_field="type"):
    file_id: str | None = None


class InputAudio(msgspec.Struct, tag="input_audio", tag_field="type"):
    input_audio: Any = None


InputPart = InputText | OutputText | Refusal | InputImage | InputFile | InputAudio


class MessageItem(msgspec.Struct, kw_only=True):
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputPart]
    type: Literal["message"] = "message"
    id: str | None = None
    status: str | None = None


class FunctionCallItem(msgspec.Struct, kw_only=True):
    call_id: str
    name: str
    arguments: str
    type: Literal["function_call"] = "function_call"
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(msgspec.Struct, kw_only=True):
    call_id: str
    output: str | list[InputPart]
    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    status: str | None = None


class ReasoningInputItem(msgspec.Struct, kw_only=True):
    summary: list[dict[str, Any]] = []
    content: list[dict[str, Any]] | None = None
    type: Literal["reasoning"] = "reasoning"
    id: str | None = None
    encrypted_content: str | None = None
    status: str | None = None


INPUT_ITEM_TYPES: dict[str, type] = {
    "message": MessageItem, "function_call": FunctionCallItem, "function_call_output": FunctionCallOutputItem,
    "reasoning": ReasoningInputItem,
}

# ---- response ------------------------------------------------------------------------------------


class OutputTextPart(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class ReasoningTextPart(msgspec.Struct, tag="reasoning_text", tag_field="type"):
    text: str


class MessageOutput(msgspec.Struct, tag="message", tag_field="type"):
    id: str
    status: str
    content: list[OutputTextPart]
    role: str = "assistant"


class ReasoningOutput(msgspec.Struct, tag="reasoning", tag_field="type"):
    id: str
    content: list[ReasoningTextPart]
    summary: list[Any] = []
    status: str = "completed"


class FunctionCallOutput(msgspec.Struct, tag="function_call", tag_field="type"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str


OutputItem = MessageOutput | ReasoningOutput | FunctionCallOutput


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(msgspec.Struct):
    code: str
    message: str


class IncompleteDetails(msgspec.Struct):
    reason: str


class ResponseObject(msgspec.Struct, kw_only=True):
    """The response (unary body, in lifecycle events, and as stored)."""

    id: str
    created_at: int
    model: str
    status: str
    output: list[OutputItem]
    object: str = "response"
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: ReasoningConfig = msgspec.field(default_factory=ReasoningConfig)
    store: bool = True
    temperature: float | None = None
    text: TextConfig = msgspec.field(default_factory=TextConfig)
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[FunctionTool] = []
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = {}
    background: bool = False
    completed_at: int | None = None


class DeletedResponse(msgspec.Struct):
    id: str
    object: str = "response"
    deleted: bool = True


class ResponseStreamEvent(msgspec.Struct, omit_defaults=True):
    """One SSE event; which optional fields it has depends on ``type`` (OpenAI's event shapes)."""

    type: str
    sequence_number: int
    response: ResponseObject | None = None
    output_index: int | None = None
    item: OutputItem | None = None
    item_id: str | None = None
    content_index: int | None = None
    part: OutputTextPart | ReasoningTextPart | None = None
    delta: str | None = None
    text: str | None = None
    arguments: str | None = None
    name: str | None = None
    logprobs: list[Any] | None = None
