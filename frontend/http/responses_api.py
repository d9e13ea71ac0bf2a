"""The OpenAI Responses API: ``POST /v1/responses`` (unary and streamed), ``GET`` and ``DELETE /v1/responses/{id}``.

Served on top of chat: the request is translated (``responses_input.py``), run as a chat session with the
model's parsers, and the parsed output becomes output items (``responses_output.py``). With ``store: true``
(the default, as OpenAI's) and the store enabled, the response and the conversation after it are kept in the
store (``frontend/stores/responses.py``: SQLite, or PostgreSQL shared by several frontends) before the client
sees the end of the response, so a ``previous_response_id`` sent right after can be served by any HTTP process.
A store that cannot answer is a 503 for reading or deleting; a response it cannot keep is still answered.
"""

from __future__ import annotations

import itertools
import logging
import time

import msgspec

from ..gateway.state import Gateway
from ..parsers.base import REASONING, TOOL_CALL, Segment
from ..pipeline.chat_session import ChatOutcome, ChatSession, collect_chat, open_session, segments_of
from ..pipeline.guided import SCHEMA_FIELD
from ..postprocess.pipeline import Delta
from ..protocol import responses as rs
from ..protocol.errors import InvalidRequest, MethodNotAllowed, NotFoundRoute, RequestError, ServiceUnavailable
from ..protocol.openai import ChatMessage, FunctionCall, ToolCall
from ..stores.responses import ResponseStore, StoredResponse, StoreUnavailable, open_response_store
from .reply import JSON_HEADERS, SSE_HEADERS, send_json
from .responses_input import to_chat_request
from .responses_output import OutputBuilder, new_id
from .streaming import StreamEnd, StreamWriter, decode_request, open_stream, stream_deltas

ITEM_PREFIX = "/v1/responses/"

log = logging.getLogger(__name__)

# chat field -> the Responses API's, in 400s
_FIELD_NAMES = {"messages": "input", "response_format": "text.format", SCHEMA_FIELD: "text.format.schema"}
_decoder = msgspec.json.Decoder(rs.ResponsesRequest)
_conversation_decoder = msgspec.json.Decoder(list[ChatMessage])
_stores: dict[str, ResponseStore] = {}


def store_of(gateway: Gateway) -> ResponseStore | None:
    """This process's handle on the store, or None when responses are not stored."""
    apis = gateway.settings.apis
    where = apis.responses_store_url or apis.responses_store_path
    if not where:
        return None
    store = _stores.get(where)
    if store is None:
        store = open_response_store(apis.responses_store_path, apis.responses_store_url, apis.responses_store_ttl_s,
                                    apis.responses_store_max_bytes)
        _stores[where] = store
    return store


async def create(gateway: Gateway, scope, proto, body: bytes) -> None:
    """POST /v1/responses."""
    request: rs.ResponsesRequest = decode_request(_decoder, body)
    if request.background:
        raise InvalidRequest("background responses are not supported", param="background")
    store = store_of(gateway)
    history = await _history(store, request.previous_response_id)
    chat_request, conversation = to_chat_request(request, history)
    session = await open_session(gateway, chat_request, msgspec.json.encode(chat_request), scope.headers,
                                 proto.client_disconnect, names=_FIELD_NAMES)
    run = _Run(request, session, conversation, store if request.store else None)
    async with session:
        if request.stream:
            await run.stream(open_stream(gateway, scope, proto, SSE_HEADERS))
            return
        outcomes = await collect_chat(session)
        if outcomes is not None:
            run.builder.add(outcomes[0].segments)
            run.builder.close(_item_status(outcomes[0]))
            send_json(proto, 200, await run.finish(outcomes[0]))


async def item(gateway: Gateway, scope, proto, body: bytes) -> None:
    """GET or DELETE /v1/responses/{id}."""
    response_id = scope.path[len(ITEM_PREFIX):]
    store = store_of(gateway)
    if scope.method in ("GET", "HEAD"):
        stored = await _get(store, response_id) if store is not None and response_id else None
        if stored is None:
            raise _not_found(response_id)
        proto.response_bytes(200, JSON_HEADERS, stored.response)
    elif scope.method == "DELETE":
        if store is None or not response_id or not await _delete(store, response_id):
            raise _not_found(response_id)
        send_json(proto, 200, rs.DeletedResponse(response_id))
    else:
        raise MethodNotAllowed(f"method {scope.method} is not allowed on {scope.path}")


def _not_found(response_id: str) -> RequestError:
    return NotFoundRoute(f"Response with id '{response_id}' not found.", param="response_id")


async def _get(store: ResponseStore, response_id: str) -> StoredResponse | None:
    try:
        return await store.get(response_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None


async def _delete(store: ResponseStore, response_id: str) -> bool:
    try:
        return await store.delete(response_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None


def _unavailable(exc: StoreUnavailable) -> RequestError:
    log.warning("responses store unavailable", extra={"error": str(exc)})
    return ServiceUnavailable("The responses store is unavailable; try again later.", code="store_unavailable")


async def _history(store: ResponseStore | None, previous_response_id: str | None) -> list[ChatMessage]:
    if previous_response_id is None:
        return []
    stored = await _get(store, previous_response_id) if store is not None else None
    if stored is None:
        raise InvalidRequest(f"Previous response with id '{previous_response_id}' not found.",
                             param="previous_response_id", code="previous_response_not_found")
    return _conversation_decoder.decode(stored.conversation)


class _Run:
    """One response being produced: its id, output builder and the store write at the end."""

    def __init__(self, request: rs.ResponsesRequest, session: ChatSession, conversation: list[ChatMessage],
                 store: ResponseStore | None) -> None:
        self.request = request
        self.session = session
        self.conversation = conversation
        self.store = store
        self.id = new_id("resp")
        self.created = int(time.time())
        self._sequence = itertools.count()
        self.builder = OutputBuilder(lambda: next(self._sequence))

    async def stream(self, writer: StreamWriter) -> None:
        pending = self.response("in_progress")
        events = [self._lifecycle("response.created", pending), self._lifecycle("response.in_progress", pending)]
        if not await writer.send(_sse(events)):
            return
        segments: list[Segment] = []
        outcome: ChatOutcome | None = None

        def encode(_index: int, delta: Delta) -> bytes:
            nonlocal outcome
            parsed = segments_of(delta.segments, delta.text)
            segments.extend(parsed)
            events = self.builder.add(parsed)
            if delta.finish_reason is not None:
                outcome = ChatOutcome(segments, self.session.finish_reason(delta.finish_reason), [],
                                      self.session.stop_sequence, self.session.usage())
                events += self.builder.close(_item_status(outcome))
            return _sse(events) if events else b""

        def encode_error(error: RequestError) -> bytes:
            code = "invalid_request" if error.status == 400 else "server_error"
            failed = self.response("failed", error=rs.ResponseError(code, error.message))
            return _sse([self._lifecycle("response.failed", failed)])

        ended = await stream_deltas(writer, [self.session.generation], encode, encode_error)
        if ended is StreamEnd.FINISHED and outcome is not None:
            final = await self.finish(outcome)  # stored first: the closing event then names a stored response
            await writer.send(_sse([self._lifecycle(f"response.{final.status}", final)]))

    async def finish(self, outcome: ChatOutcome) -> rs.ResponseObject:
        """The final response, from the closed output; stored when asked to."""
        response = self.response(_item_status(outcome), outcome=outcome)
        if self.store is not None:
            conversation = self.conversation + [_assistant_message(outcome.segments)]
            try:
                await self.store.put(self.id, msgspec.json.encode(response), msgspec.json.encode(conversation))
            except StoreUnavailable as exc:  # the answer still goes out; only continuing from it will fail
                log.warning("cannot store the response", extra={"response_id": self.id, "error": str(exc)})
        return response

    def response(self, status: str, *, outcome: ChatOutcome | None = None,
                 error: rs.ResponseError | None = None) -> rs.ResponseObject:
        request = self.request
        done = status in ("completed", "incomplete")
        return rs.ResponseObject(
            id=self.id, created_at=self.created, model=self.session.model.name, status=status,
            output=list(self.builder.items) if done else [], error=error,
            incomplete_details=rs.IncompleteDetails("max_output_tokens") if status == "incomplete" else None,
            instructions=request.instructions, max_output_tokens=request.max_output_tokens,
            parallel_tool_calls=request.parallel_tool_calls is not False,
            previous_response_id=request.previous_response_id, reasoning=request.reasoning or rs.ReasoningConfig(),
            store=self.store is not None, temperature=request.temperature, text=request.text or rs.TextConfig(),
            tool_choice=request.tool_choice or "auto", tools=request.tools or [], top_p=request.top_p,
            truncation=request.truncation or "disabled", user=request.user, metadata=request.metadata or {},
            usage=self._usage(outcome) if outcome is not None else None,
            completed_at=int(time.time()) if done else None,
        )

    def _usage(self, outcome: ChatOutcome) -> rs.ResponseUsage:
        usage = outcome.usage
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
        reasoning = outcome.joined(REASONING)
        reasoning_tokens = len(self.session.generation.tokenizer.encode(reasoning, add_special_tokens=False).ids) \
            if reasoning else 0
        return rs.ResponseUsage(usage.prompt_tokens, rs.InputTokensDetails(cached), usage.completion_tokens,
                                rs.OutputTokensDetails(min(reasoning_tokens, usage.completion_tokens)),
                                usage.total_tokens)

    def _lifecycle(self, kind: str, response: rs.ResponseObject) -> rs.ResponseStreamEvent:
        return rs.ResponseStreamEvent(kind, next(self._sequence), response=response)


def _item_status(outcome: ChatOutcome) -> str:
    """``incomplete`` when the output hit max_output_tokens (for the last item and the response)."""
    return "incomplete" if outcome.finish_reason == "length" else "completed"


def _assistant_message(segments: list[Segment]) -> ChatMessage:
    """The response's output as the assistant message the next turn's template renders."""
    text = "".join(s.text for s in segments if s.kind not in (REASONING, TOOL_CALL))
    reasoning = "".join(s.text for s in segments if s.kind == REASONING)
    calls = [ToolCall(s.call.id, FunctionCall(s.call.name, s.call.arguments)) for s in segments if s.call]
    return ChatMessage("assistant", text or None, tool_calls=calls or None, reasoning_content=reasoning or None)


def _sse(events: list[rs.ResponseStreamEvent]) -> bytes:
    return b"".join(b"event: " + event.type.encode() + b"\ndata: " + msgspec.json.encode(event) + b"\n\n"
                    for event in events)
