"""OpenAI-compatible request and response types for chat completions, completions and models.

Requests decode with msgspec straight from the body: unknown fields are ignored (as OpenAI-compatible
servers do), known fields are type- and range-checked, and a failure becomes a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .limits import MAX_STOP_TOKEN_IDS

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1, le=2**31 - 1)]
NonNegativeInt = Annotated[int, Meta(ge=0, le=2**31 - 1)]
TokenId = Annotated[int, Meta(ge=0, le=2**32 - 1)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
TopK = Annotated[int, Meta(ge=-1, le=2**31 - 1)]
RepetitionPenalty = Annotated[float, Meta(gt=0.0, le=2.0)]
ChoiceCount = Annotated[int, Meta(ge=1, le=128)]


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageUrl(msgspec.Struct):
    url: str
    detail: str | None = None


class ImagePart(msgspec.Struct, tag="image_url", tag_field="type"):
    image_url: ImageUrl


class InputAudio(msgspec.Struct):
    data: str
    format: str


class AudioPart(msgspec.Struct, tag="input_audio", tag_field="type"):
    input_audio: InputAudio


ContentPart = TextPart | ImagePart | AudioPart


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str


class ToolCall(msgspec.Struct):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct, omit_defaults=True):
    """One message of the conversation; content is a string or a list of content parts."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDefinition(msgspec.Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct):
    function: FunctionDefinition
    type: Literal["function"] = "function"


class StreamOptions(msgspec.Struct):
    include_usage: bool = False
    continuous_usage_stats: bool = False


# ---- structured output -----------------------------------------------------------------------------


class JsonSchemaSpec(msgspec.Struct, kw_only=True):
    """``response_format.json_schema``: the schema the output must match (a JSON Schema object)."""

    name: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormatText(msgspec.Struct, tag="text", tag_field="type"):
    """Plain text (the default)."""


class ResponseFormatJsonObject(msgspec.Struct, tag="json_object", tag_field="type"):
    """Any JSON object."""


class ResponseFormatJsonSchema(msgspec.Struct, tag="json_schema", tag_field="type"):
    """JSON matching ``json_schema.schema``."""

    json_schema: JsonSchemaSpec


ResponseFormat = ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema


# ---- nvext (NVIDIA Dynamo's request and response extensions) ---------------------------------------


class NvExt(msgspec.Struct, kw_only=True):
    """NVIDIA Dynamo's request extensions (``frontend/pipeline/nvext.py``). ``greed_sampling``: greedy decoding.
    ``use_raw_prompt``: no chat template, the messages' text is the prompt. ``annotations``: named SSE events
    on streams (request_id, formatted_prompt, token_ids, llm_metrics). ``backend_instance_id``: pin a worker
    instance (``decode_worker_id`` too, when it is not set); ``prefill_worker_id``: the prefill worker of a
    disaggregated request. ``token_data``: the prompt as token ids. ``max_thinking_tokens``: the reasoning budget.
    ``extra_fields``: what the response's ``nvext`` reports (worker_id, timing). The other fields are Dynamo's
    deprecated copies of root-level fields, used when the root-level field is not set. Unknown fields are
    ignored; the server's ``--disable-nvext`` ignores all of them.
    """

    greed_sampling: bool | None = None
    use_raw_prompt: bool | None = None
    annotations: list[str] | None = None
    backend_instance_id: int | str | None = None
    prefill_worker_id: int | str | None = None
    decode_worker_id: int | str | None = None
    token_data: list[TokenId] | None = None
    max_thinking_tokens: NonNegativeInt | None = None
    extra_fields: list[str] | None = None
    ignore_eos: bool | None = None
    min_tokens: NonNegativeInt | None = None
    top_k: TopK | None = None
    repetition_penalty: RepetitionPenalty | None = None
    include_stop_str_in_output: bool | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None
    guided_decoding_backend: str | None = None


class WorkerIdInfo(msgspec.Struct, omit_defaults=True):
    """The worker instance(s) that served the choice: the prefill worker of a disaggregated request and its decode
    worker; the same worker for both when it was served whole."""

    prefill_worker_id: str | None = None
    decode_worker_id: str | None = None


class TimingInfo(msgspec.Struct, omit_defaults=True):
    """Timing of the choice as the frontend saw it (milliseconds)."""

    request_received_ms: int  # wall clock, epoch milliseconds
    ttft_ms: float | None = None
    total_time_ms: float | None = None
    itl_ms: float | None = None  # mean inter-token latency after the first token


class ResponseNvExt(msgspec.Struct, omit_defaults=True):
    """The response's ``nvext``: what ``nvext.extra_fields`` asked for."""

    worker_id: WorkerIdInfo | None = None
    timing: TimingInfo | None = None


class _SamplingFields(msgspec.Struct, kw_only=True):
    """Fields chat and completions requests share."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    min_p: Probability | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    stop_token_ids: Annotated[list[TokenId], Meta(max_length=MAX_STOP_TOKEN_IDS)] | None = None
    n: ChoiceCount = 1
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: RepetitionPenalty | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    guided_json: dict[str, Any] | str | None = None  # a JSON Schema (object, or as a JSON string)
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_decoding_backend: str | None = None
    guided_whitespace_pattern: str | None = None
    ignore_eos: bool = False
    min_tokens: NonNegativeInt | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    nvext: NvExt | None = None


class ChatCompletionRequest(_SamplingFields, kw_only=True):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage]
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False


class CompletionRequest(_SamplingFields, kw_only=True):
    """POST /v1/completions."""

    # a string, a list of strings, token ids, or a list of token-id lists (checked by the handler)
    prompt: str | list[str | TokenId | list[TokenId]]
    logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: PositiveInt | None = None


# ---- responses -------------------------------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int = 0


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobEntry(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(msgspec.Struct):
    content: list[TokenLogprobEntry] | None
    refusal: list[TokenLogprobEntry] | None = None


class AssistantMessage(msgspec.Struct):
    content: str | None
    role: str = "assistant"
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None
    object: str = "chat.completion"
    system_fingerprint: str | None = None
    nvext: ResponseNvExt | msgspec.UnsetType = msgspec.UNSET


class FunctionCallDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    """A streamed tool call: the first delta of a call has id, type and name, later ones argument text."""

    index: int
    function: FunctionCallDelta
    id: str | None = None
    type: str | None = None


class ChatDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(msgspec.Struct):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Usage | None = None
    nvext: ResponseNvExt | msgspec.UnsetType = msgspec.UNSET


class CompletionLogprobs(msgspec.Struct):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(msgspec.Struct):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None
    object: str = "text_completion"
    system_fingerprint: str | None = None
    nvext: ResponseNvExt | msgspec.UnsetType = msgspec.UNSET


class ModelEntry(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    context_length: int
    model_types: list[str]
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[ModelEntry]
    object: str = "list"


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | int | None


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail
