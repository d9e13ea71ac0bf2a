"""The mock engine's scripted answers (frontend/engines/mocker/script.py) and the reasoning budget it honours."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from frontend.engines.mocker.corpus import Corpus
from frontend.engines.mocker.engine import EngineSettings, MockEngine
from frontend.engines.mocker.script import Rule, Script
from frontend.protocol.engine import GenerateRequest, StopConditions

TINY = Path(__file__).resolve().parents[2] / "config" / "models" / "tiny"
OUTPUT = "<think>\none two three four five six\n</think>\n\nThe answer."


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TINY / "tokenizer.json"))


class Sink:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.finished = False
        self.done = asyncio.Event()

    def send(self, tokens, finish_reason=None, logprobs=None, *, error=None, cached_tokens=0, retryable=False,
             kv_transfer_params=None) -> None:
        self.tokens += tokens
        if finish_reason is not None:
            self.finish, self.finished = finish_reason, True
            self.done.set()


def generate(tokenizer, script: Script, prompt: str, max_tokens: int = 100, thinking: int | None = None):
    async def main():
        engine = MockEngine(Corpus(tokenizer), EngineSettings(speedup_ratio=1e12), script=script)
        task = asyncio.create_task(engine.run())
        sink = Sink()
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        engine.add_request(GenerateRequest("r", ids, StopConditions(max_tokens, max_thinking_tokens=thinking)), sink)
        await asyncio.wait_for(sink.done.wait(), 5)
        task.cancel()
        return tokenizer.decode(sink.tokens, skip_special_tokens=False), sink.finish

    return asyncio.run(main())


def test_first_matching_rule_answers(tokenizer):
    script = Script([Rule("tool result", "Done."), Rule("question", OUTPUT), Rule("", "Fallback.")], tokenizer)
    assert generate(tokenizer, script, "a question and a tool result") == ("Done.", "stop")
    assert generate(tokenizer, script, "a question") == (OUTPUT, "stop")
    assert generate(tokenizer, script, "anything") == ("Fallback.", "stop")


def test_unmatched_prompt_gets_corpus_text(tokenizer):
    text, finish = generate(tokenizer, Script([Rule("never", "x")], tokenizer), "hello", max_tokens=5)
    assert finish == "length" and text and text != "x"


def test_max_tokens_cuts_the_script(tokenizer):
    text, finish = generate(tokenizer, Script([Rule("", OUTPUT)], tokenizer), "q", max_tokens=3)
    assert finish == "length" and OUTPUT.startswith(text)


def test_thinking_budget_jumps_to_the_end_of_reasoning(tokenizer):
    text, finish = generate(tokenizer, Script([Rule("", OUTPUT)], tokenizer), "q", thinking=2)
    reasoning = text.split("</think>")[0]
    assert finish == "stop" and text.endswith("</think>\n\nThe answer.")
    assert len(tokenizer.encode(reasoning.removeprefix("<think>"), add_special_tokens=False).ids) == 2


def test_from_file(tmp_path, tokenizer):
    path = tmp_path / "script.json"
    path.write_text(json.dumps([{"match": "a", "output": "b"}]))
    assert Script.from_file(str(path), tokenizer).rules == [Rule("a", "b")]
    path.write_text('[{"match": "a"}]')
    with pytest.raises(ValueError, match="script.json"):
        Script.from_file(str(path), tokenizer)
