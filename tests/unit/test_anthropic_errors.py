"""Errors of the Anthropic door (frontend.http.anthropic.send_error): Anthropic's shape and status, and a context
overflow in Anthropic's words (its clients recognise ``prompt is too long``)."""

from __future__ import annotations

import json

import pytest

from frontend.http.anthropic import send_error
from frontend.protocol.errors import ContextLengthExceeded, InvalidRequest, RequestError, ServiceUnavailable


class Proto:
    """Records the one response a handler sends."""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, json.loads(body)


def sent(error: RequestError) -> Proto:
    proto = Proto()
    send_error(proto, error)
    return proto


@pytest.mark.parametrize("prompt, requested, message", [
    (40000, 100, "prompt is too long: 40000 tokens > 32768 maximum"),
    (40000, None, "prompt is too long: 40000 tokens > 32768 maximum"),
    (32768, 1, "input length and `max_tokens` exceed context limit: 32768 + 1 > 32768, decrease input length or "
               "`max_tokens` and try again"),
    (20, 40000, "input length and `max_tokens` exceed context limit: 20 + 40000 > 32768, decrease input length or "
                "`max_tokens` and try again"),
])
def test_context_overflow_in_anthropics_words(prompt, requested, message):
    error = ContextLengthExceeded("This model's maximum context length is ...", prompt_tokens=prompt,
                                  context_length=32768, requested=requested)
    proto = sent(error)
    assert proto.status == 400
    assert proto.body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def test_other_errors_keep_their_message():
    assert sent(InvalidRequest("bad field", param="x")).body["error"]["message"] == "bad field"
    assert sent(ContextLengthExceeded("input[0] has 9 tokens", "input")).body["error"]["message"] == \
        "input[0] has 9 tokens"  # no counts: the message as raised
    overloaded = sent(ServiceUnavailable("no worker"))
    assert overloaded.status == 529 and ("retry-after", "1") in overloaded.headers
