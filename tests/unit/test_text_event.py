"""The streamed text-delta fast path writes exactly the bytes the Struct path writes."""

import pytest
from hypothesis import given, strategies as st

from frontend.http.reply import TEXT_SLOT, TextEvent, sse_event
from frontend.protocol.openai import ChatChunkChoice, ChatCompletionChunk, ChatDelta, Completion, CompletionChoice

TEXTS = ["", "hello", ' "quoted" \\ back', "line\nbreak\ttab\r", "\x00\x1f\x7f", "é 漢字 🦙", "</script>", "\u2028\u2029",
         "\ud7ff\ue000", TEXT_SLOT[1:]]


def chat_chunk(text: str, index: int = 0) -> ChatCompletionChunk:
    return ChatCompletionChunk("chatcmpl-1", 1700000000, "tiny", [ChatChunkChoice(index, ChatDelta(content=text))])


def completion_chunk(text: str, index: int = 0) -> Completion:
    return Completion("cmpl-1", 1700000000, "tiny", [CompletionChoice(index, text, None)], None)


@pytest.mark.parametrize("make", [chat_chunk, completion_chunk])
@pytest.mark.parametrize("text", TEXTS)
def test_same_bytes_as_the_struct_event(make, text):
    encode = TextEvent(make(TEXT_SLOT, 3))
    assert encode(text) == sse_event(make(text, 3))


@given(st.text())
def test_any_text(text):
    assert TextEvent(chat_chunk(TEXT_SLOT))(text) == sse_event(chat_chunk(text))


def test_a_template_without_the_slot_is_a_bug():
    with pytest.raises(AssertionError):
        TextEvent(chat_chunk("no slot"))
