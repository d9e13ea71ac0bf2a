"""Engine logprobs (token ids) to OpenAI's chat and completions logprob shapes."""

from __future__ import annotations

from tokenizers import Tokenizer

from ..protocol.engine import TokenLogprob
from ..protocol.openai import ChoiceLogprobs, CompletionLogprobs, TokenLogprobEntry, TopLogprob


def _token_text(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def chat_logprobs(tokenizer: Tokenizer, entries: list[TokenLogprob]) -> ChoiceLogprobs:
    content = []
    for entry in entries:
        text = _token_text(tokenizer, entry.token_id)
        top = []
        for token_id, logprob in entry.top:
            alt = _token_text(tokenizer, token_id)
            top.append(TopLogprob(alt, logprob, list(alt.encode())))
        content.append(TokenLogprobEntry(text, entry.logprob, list(text.encode()), top))
    return ChoiceLogprobs(content)


def completion_logprobs(tokenizer: Tokenizer, entries: list[TokenLogprob], text_offset: int) -> CompletionLogprobs:
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for entry in entries:
        text = _token_text(tokenizer, entry.token_id)
        tokens.append(text)
        token_logprobs.append(entry.logprob)
        top_logprobs.append({_token_text(tokenizer, token_id): lp for token_id, lp in entry.top})
        offsets.append(text_offset)
        text_offset += len(text)
    return CompletionLogprobs(tokens, token_logprobs, top_logprobs, offsets)
