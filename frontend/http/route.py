"""One served endpoint: how the app dispatches it and how the OpenAPI document describes it.

Every endpoint is one :class:`Route` in ``routes.py``'s table; ``app.py`` dispatches from it and
``openapi.py`` builds ``/openapi.json`` from it, so a route cannot be served undocumented (or documented and
not served). How to describe one::

    Route("POST", "/v1/responses", "Create a model response", tag="responses", operation_id="createResponse",
          handler=responses_api.create, label="responses",   # how it is served, its metrics label
          request=ResponsesRequest,                 # msgspec type of the JSON body
          request_examples={"basic": {"model": "tiny", "input": "Hello!"}},  # Try it out's body
          response=ResponseObject,                  # msgspec type of the 200 JSON body
          stream=ResponseStreamEvent,               # SSE event `data:` type when the body has stream: true
          errors=GENERATION_ERRORS)                 # statuses answered with OpenAI's ErrorResponse

* ``errors`` are statuses from ``openapi.ERROR_STATUSES``; they share one ``#/components/responses/...``
  entry each, with ``error_schema`` (default :class:`~frontend.protocol.openai.ErrorResponse`) as the body.
  An endpoint with another error shape (Anthropic's) passes its own ``error_schema`` and ``render_error``.
* ``responses`` adds other statuses with their own body type, e.g. /health's 503.
* A non-JSON 200 body (Prometheus text, HTML) gives ``response_content_type`` and no ``response`` type.
* ``stream`` documents the ``text/event-stream`` alternative of the 200 (see ``openapi.py``);
  ``stream_description`` says how the stream is framed and ends when not as chat's (``data:`` only, ``[DONE]``).
* A path with a parameter gives its ``prefix``: every request under it goes to the handler, whatever the
  method (the handler answers 405 itself). Without a ``label`` it describes the service (``GET
  /v1/models/{model}``): served while the daemon drains, outside the request metrics, its handler called with the
  scope and no body.
* A route without ``summary`` is served but not in the document (Swagger UI's files).
* ``auth="anthropic"``: with ``--api-key`` the route takes the key as ``x-api-key`` too, and says so in its 401
  (whose shape comes from ``render_error``); every other route takes ``Authorization: Bearer`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Mapping

from ..protocol.errors import RequestError
from ..protocol.openai import ErrorResponse

if TYPE_CHECKING:
    from ..gateway.state import Gateway

Handler = Callable[["Gateway", Any, Any, bytes], Awaitable[None]]  # POST and parameter routes: scope and body
InfoHandler = Callable[["Gateway", Any], Awaitable[None] | None]  # GET routes: no body
ParameterInfoHandler = Callable[["Gateway", Any, Any], None]  # parameter routes without a label: scope, no body


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a table entry is itself
class Route:
    """One served (method, path); see the module docstring."""

    method: Literal["GET", "POST", "ANY"]
    path: str
    summary: str = ""  # "": served, but not in the OpenAPI document
    tag: str = ""
    operation_id: str = ""
    handler: Handler | InfoHandler | ParameterInfoHandler | None = None
    label: str = ""  # the ``endpoint`` label of requests_total (POST and parameter routes that are admitted)
    prefix: str = ""  # a path with a parameter: every request under this prefix
    render_error: Callable[[Any, RequestError], None] | None = None  # errors in another API's shape
    description: str = ""
    request: Any = None  # msgspec type of the JSON request body
    request_examples: Mapping[str, Any] = field(default_factory=dict)  # name -> example body
    response: Any = None  # msgspec type of the 200 body (JSON)
    response_content_type: str | None = None  # of a non-JSON 200 body (then ``response`` is None)
    response_description: str = "OK"
    stream: Any = None  # type of each SSE event's data when the request asks for stream: true
    stream_description: str = ""  # how the stream is framed and ends, when not as chat's (data-only, [DONE])
    errors: tuple[int, ...] = ()  # statuses of openapi.ERROR_STATUSES
    error_schema: Any = ErrorResponse
    responses: Mapping[int, tuple[str, Any]] = field(default_factory=dict)  # status -> (description, type)
    parameters: tuple[Mapping[str, Any], ...] = ()  # OpenAPI parameter objects (path parameters)
    auth: Literal["openai", "anthropic"] = "openai"  # with --api-key: Bearer only, or x-api-key too (http/auth.py)

    @property
    def listed(self) -> bool:
        """In the OpenAPI document."""
        return bool(self.summary)
