"""An Anthropic Messages request as a chat completion request (``/v1/messages`` runs on top of chat).

``system`` becomes a system message; a user message's ``tool_result`` blocks become ``tool`` messages (before
its text and images); an assistant message's ``tool_use`` blocks become ``tool_calls`` and its ``thinking``
blocks ``reasoning_content``. ``tool_choice`` any / tool / none map to required / a named function / none,
``disable_parallel_tool_use`` to ``parallel_tool_calls: false``, ``stop_sequences`` to ``stop``, and
``thinking`` to ``chat_template_kwargs.enable_thinking`` plus the reasoning budget (``max_thinking_tokens``),
``output_config.format`` to a JSON-schema ``response_format`` and ``output_config.effort`` to the template's
``reasoning_effort``.
"""

from __future__ import annotations

import json
from typing import Any

from ..protocol import anthropic as an
from ..protocol.errors import InvalidRequest
from ..protocol.openai import (ChatCompletionRequest, ChatMessage, ContentPart, FunctionCall, FunctionDefinition,
                               ImagePart, ImageUrl, TextPart, Tool, ToolCall)

MIN_THINKING_BUDGET = 1024  # Anthropic's lower bound for thinking.budget_tokens


def to_chat_request(request: an.MessagesRequest | an.CountTokensRequest) -> ChatCompletionRequest:
    """The chat request that runs ``request`` (400 naming the field on what cannot be served)."""
    messages = _system(request.system)
    for index, message in enumerate(request.messages):
        messages += _user(message, index) if message.role == "user" else [_assistant(message, index)]
    choice = request.tool_choice
    sampling = _sampling(request) if isinstance(request, an.MessagesRequest) else {}
    template_kwargs, nvext = _thinking(request.thinking, sampling.get("max_tokens"))
    output = request.output_config
    if output is not None and output.effort:
        template_kwargs = {**(template_kwargs or {}), "reasoning_effort": output.effort}
    return ChatCompletionRequest(
        model=request.model, messages=messages, tools=_tools(request.tools), tool_choice=_tool_choice(choice),
        parallel_tool_calls=False if choice is not None and choice.disable_parallel_tool_use else None,
        chat_template_kwargs=template_kwargs, nvext=nvext, response_format=_response_format(output), **sampling,
    )


def _response_format(output: an.OutputConfig | None) -> dict[str, Any] | None:
    if output is None or output.format is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": output.format.schema}}


def _sampling(request: an.MessagesRequest) -> dict[str, Any]:
    return {"max_tokens": request.max_tokens, "temperature": request.temperature, "top_p": request.top_p,
            "top_k": request.top_k, "stop": request.stop_sequences, "stream": request.stream,
            "user": request.metadata.user_id if request.metadata else None}


def _system(system: str | list[an.TextBlock] | None) -> list[ChatMessage]:
    if not system:
        return []
    text = system if isinstance(system, str) else "\n\n".join(block.text for block in system)
    return [ChatMessage("system", text)]


def _user(message: an.InputMessage, index: int) -> list[ChatMessage]:
    if isinstance(message.content, str):
        return [ChatMessage("user", message.content)]
    tools: list[ChatMessage] = []
    parts: list[ContentPart] = []
    for block in message.content:
        if isinstance(block, an.ToolResultBlock):
            tools.append(ChatMessage("tool", _result_text(block, index), tool_call_id=block.tool_use_id))
        elif isinstance(block, (an.TextBlock, an.ImageBlock)):
            parts.append(_part(block))
        else:
            raise _unsupported(block, "user", index)
    return tools + ([ChatMessage("user", parts)] if parts else [])


def _assistant(message: an.InputMessage, index: int) -> ChatMessage:
    if isinstance(message.content, str):
        return ChatMessage("assistant", message.content)
    text, thinking, calls = [], [], []
    for block in message.content:
        if isinstance(block, an.TextBlock):
            text.append(block.text)
        elif isinstance(block, an.ThinkingBlock):
            thinking.append(block.thinking)
        elif isinstance(block, an.ToolUseBlock):
            calls.append(ToolCall(block.id, FunctionCall(block.name, json.dumps(block.input, ensure_ascii=False))))
        elif not isinstance(block, an.RedactedThinkingBlock):
            raise _unsupported(block, "assistant", index)
    return ChatMessage("assistant", "".join(text) or None, tool_calls=calls or None,
                       reasoning_content="".join(thinking) or None)


def _part(block: an.TextBlock | an.ImageBlock) -> ContentPart:
    if isinstance(block, an.TextBlock):
        return TextPart(block.text)
    source = block.source
    url = source.url if source.type == "url" else f"data:{source.media_type};base64,{source.data}"
    return ImagePart(ImageUrl(url or ""))


def _result_text(block: an.ToolResultBlock, index: int) -> str:
    content = block.content
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        if any(not isinstance(part, an.TextBlock) for part in content):
            raise InvalidRequest("only text is supported in tool_result content", param=f"messages[{index}].content")
        text = "".join(part.text for part in content if isinstance(part, an.TextBlock))
    return f"Error: {text}" if block.is_error else text


def _unsupported(block: Any, role: str, index: int) -> InvalidRequest:
    kind = type(block).__struct_config__.tag
    return InvalidRequest(f"{kind} blocks are not supported in {role} messages", param=f"messages[{index}].content")


def _tools(tools: list[an.ToolDefinition] | None) -> list[Tool] | None:
    if not tools:
        return None
    for index, tool in enumerate(tools):
        if tool.type not in (None, "custom"):
            raise InvalidRequest(f"server tools ({tool.type}) are not supported; only client tools are",
                                 param=f"tools[{index}].type")
    return [Tool(FunctionDefinition(t.name, t.description, t.input_schema or {"type": "object"})) for t in tools]


def _tool_choice(choice: an.ToolChoice | None) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type tool needs a name", param="tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _thinking(thinking: an.ThinkingConfig | None, max_tokens: int | None) -> tuple[dict | None, dict | None]:
    """(chat_template_kwargs, nvext) for the thinking setting."""
    if thinking is None:
        return None, None
    if thinking.type == "disabled":
        return {"enable_thinking": False}, None
    budget = thinking.budget_tokens
    if thinking.type == "enabled":
        if budget is None or budget < MIN_THINKING_BUDGET:
            raise InvalidRequest(f"thinking.budget_tokens must be at least {MIN_THINKING_BUDGET}",
                                 param="thinking.budget_tokens")
        if max_tokens is not None and budget >= max_tokens:
            raise InvalidRequest("max_tokens must be greater than thinking.budget_tokens",
                                 param="thinking.budget_tokens")
    return {"enable_thinking": True}, ({"max_thinking_tokens": budget} if budget else None)
