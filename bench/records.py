"""What the client records about each request, and how token counts are filled in afterwards.

Times are ``time.perf_counter_ns()`` values (CLOCK_MONOTONIC on Linux, so records from several client
processes share one time base). ``chunk_ns`` holds the arrival time of every *content* chunk: a streamed
event whose text (content, reasoning or completion text) is non-empty, as AIPerf's ``content_responses``.
Role-only, finish-reason-only and usage-only events are not content chunks.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec


class RequestRecord(msgspec.Struct, kw_only=True):
    """One request as the client saw it."""

    index: int                      # order in which the request was issued within its phase
    session: int                    # workload session (a single-turn request is a session of one turn)
    turn: int                       # turn within the session, from 0
    conversation: int               # one pass over a session (sessions repeat when the dataset wraps)
    worker: int = 0                 # client process that sent it
    start_ns: int                   # just before the request bytes were handed to the connection
    end_ns: int                     # last byte of the response (or the error)
    scheduled_ns: int | None = None  # fixed-schedule target send time
    chunk_ns: list[int] = []        # content chunk arrival times (streaming only)
    status: int = 0                 # HTTP status, 0 when no response arrived
    error_type: str | None = None   # e.g. "http_503", "ClientConnectorError", "timeout", "cancelled"
    error_message: str | None = None
    output_text: str = ""
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    input_tokens: int = 0           # client-side token count of the message text sent (set by finalize)
    output_tokens: int | None = None  # usage when present, else the tokenizer's count (set by finalize)

    @property
    def ok(self) -> bool:
        return self.error_type is None


def finalize_token_counts(records: list[RequestRecord], turn_inputs: dict[tuple[int, int], int],
                          count: Callable[[str], int]) -> None:
    """Set ``output_tokens`` (server usage, else ``count(output_text)``) and ``input_tokens``.

    A turn's input is every message it resends: the new text of all turns up to it plus the outputs of the
    earlier turns of the same session (this is how chat clients resend history). ``turn_inputs`` maps
    (session, turn) to the new input tokens of that turn. Records of one session must be in turn order
    by start time; each pass over a session (``conversation``) accumulates its own history.
    """
    history: dict[int, int] = {}
    for record in sorted(records, key=lambda r: (r.start_ns, r.index)):
        if record.usage_completion_tokens is not None:
            record.output_tokens = record.usage_completion_tokens
        elif record.ok:
            record.output_tokens = count(record.output_text) if record.output_text else 0
        previous = history.get(record.conversation, 0)
        record.input_tokens = previous + turn_inputs.get((record.session, record.turn), 0)
        history[record.conversation] = record.input_tokens + (record.output_tokens or 0)
