"""A Responses API request as a chat completion request (the Responses API is served on top of chat).

Input items become chat messages: messages (``developer`` as ``system``; input_text / output_text parts as
text, input_image as an image part), ``function_call`` items as assistant ``tool_calls`` (consecutive calls
join one assistant message), ``function_call_output`` items as ``tool`` messages, and ``reasoning`` items as
the next assistant message's ``reasoning_content``. ``instructions`` is a leading system message that is not
part of the stored conversation (OpenAI does not carry instructions over ``previous_response_id``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..protocol import responses as rs
from ..protocol.errors import InvalidRequest
from ..protocol.openai import (ChatCompletionRequest, ChatMessage, ContentPart, FunctionCall, FunctionDefinition,
                               ImagePart, ImageUrl, TextPart, Tool, ToolCall)
from .reply import validation_error


def to_chat_request(request: rs.ResponsesRequest, history: list[ChatMessage]) -> tuple[ChatCompletionRequest,
                                                                                         list[ChatMessage]]:
    """(the chat request to run, the conversation so far without instructions, for the store)."""
    conversation = history + _messages(_items(request.input))
    messages = ([ChatMessage("system", request.instructions)] if request.instructions else []) + conversation
    reasoning_effort = request.reasoning.effort if request.reasoning else None
    chat = ChatCompletionRequest(
        model=request.model, messages=messages, stream=request.stream,
        max_completion_tokens=request.max_output_tokens, temperature=request.temperature, top_p=request.top_p,
        tools=_tools(request.tools), tool_choice=_tool_choice(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls, response_format=_response_format(request.text),
        user=request.user, nvext=request.nvext,
        chat_template_kwargs={"reasoning_effort": reasoning_effort} if reasoning_effort else None,
    )
    return chat, conversation


def _items(value: str | list[dict[str, Any]]) -> list[Any]:
    if isinstance(value, str):
        return [rs.MessageItem(role="user", content=value)]
    items = []
    for index, raw in enumerate(value):
        kind = raw.get("type", "message" if "role" in raw else None)
        item_type = rs.INPUT_ITEM_TYPES.get(kind) if isinstance(kind, str) else None
        if item_type is None:
            raise InvalidRequest(f"input item type {kind!r} is not supported", param=f"input[{index}].type")
        try:
            items.append(msgspec.convert(raw, item_type))
        except msgspec.ValidationError as exc:
            message, param = validation_error(exc)
            raise InvalidRequest(message, param=f"input[{index}]" + (f".{param}" if param else "")) from None
    return items


def _messages(items: list[Any]) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    reasoning = ""  # from reasoning items, for the next assistant message
    for index, item in enumerate(items):
        if isinstance(item, rs.ReasoningInputItem):
            parts = item.content or item.summary
            reasoning += "".join(part.get("text", "") for part in parts if isinstance(part, dict))
            continue
        if isinstance(item, rs.FunctionCallOutputItem):
            message = ChatMessage("tool", _text(item.output, index), tool_call_id=item.call_id)
        elif isinstance(item, rs.FunctionCallItem):
            call = ToolCall(item.call_id, FunctionCall(item.name, item.arguments))
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and not reasoning:
                last.tool_calls = (last.tool_calls or []) + [call]
                continue
            message = ChatMessage("assistant", None, tool_calls=[call])
        else:
            message = _message(item, index)
        if message.role == "assistant" and reasoning:
            message.reasoning_content, reasoning = reasoning, ""
        messages.append(message)
    return messages


def _message(item: rs.MessageItem, index: int) -> ChatMessage:
    role = "system" if item.role == "developer" else item.role
    if isinstance(item.content, str) or role == "assistant":
        return ChatMessage(role, _text(item.content, index))
    return ChatMessage(role, [_part(part, index) for part in item.content])


def _part(part: rs.InputPart, index: int) -> ContentPart:
    if isinstance(part, (rs.InputText, rs.OutputText)):
        return TextPart(part.text)
    if isinstance(part, rs.Refusal):
        return TextPart(part.refusal)
    if isinstance(part, rs.InputImage) and part.image_url:
        return ImagePart(ImageUrl(part.image_url, part.detail))
    kind = "file ids" if isinstance(part, rs.InputImage) else type(part).__name__
    raise InvalidRequest(f"{kind} are not supported as input; send text or an image_url",
                         param=f"input[{index}].content")


def _text(content: str | list[rs.InputPart], index: int) -> str:
    if isinstance(content, str):
        return content
    parts = [_part(part, index) for part in content]
    if not all(isinstance(part, TextPart) for part in parts):
        raise InvalidRequest("only text is supported in assistant messages and tool outputs",
                             param=f"input[{index}].content")
    return "".join(part.text for part in parts if isinstance(part, TextPart))


def _tools(tools: list[rs.FunctionTool] | None) -> list[Tool] | None:
    if not tools:
        return None
    for index, tool in enumerate(tools):
        if tool.type != "function":
            raise InvalidRequest(f"tools of type {tool.type!r} are not supported; only function tools are",
                                 param=f"tools[{index}].type")
        if not tool.name:
            raise InvalidRequest("a function tool needs a name", param=f"tools[{index}].name")
    return [Tool(FunctionDefinition(t.name, t.description, t.parameters, t.strict)) for t in tools]


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest('tool_choice must be none, auto, required or {"type": "function", "name": ...}',
                         param="tool_choice")


def _response_format(text: rs.TextConfig | None) -> dict[str, Any] | None:
    form = text.format if text else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    if form.schema is None:
        raise InvalidRequest("text.format json_schema needs a schema", param="text.format.schema")
    schema = {"name": form.name or "response", "schema": form.schema}
    if form.strict is not None:
        schema["strict"] = form.strict
    return {"type": "json_schema", "json_schema": schema}
