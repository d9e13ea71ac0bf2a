"""Every parser on random mixes of its markers, JSON and text: no exception, and any split gives the unary result."""

from __future__ import annotations

import random

import pytest
from parser_support import chain_maker, run, simplify

FRAGMENTS = [
    "<tool_call>", "</tool_call>", "<think>", "</think>", '{"name": "f", "arguments": {"a": 1}}', "{", "}", "[", "]",
    '"', "\\", "\n", " ", "text", "é", "<function=f>", "<parameter=a>", "1", "</parameter>", "</function>",
    "<|python_tag|>", "<|python_start|>", "<|python_end|>", "f(a=1)", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", ";",
    "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "function", "<｜tool▁sep｜>", "```json", "```",
    "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>", "<|tool_calls_section_begin|>", "<|tool_call_begin|>",
    "functions.f:0", "<|tool_call_argument_begin|>", "<|tool_call_end|>", "<|tool_calls_section_end|>",
    "<|channel|>", "analysis", "final", "commentary to=functions.f", "<|message|>", "<|end|>", "<|call|>",
    "<|start|>", "assistant", "<|return|>", "<|constrain|>json", "Here's my thought process:", "Here is my response:",
]
SAMPLES = {  # well-formed output of each chain, mixed in whole and cut short
    "hermes": ['<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', "<think>\nr\n</think>\n\n"],
    "qwen3_coder": ["<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n</function>\n</tool_call>"],
    "llama3_json": ['{"name": "f", "parameters": {"a": 1}}', '<|python_tag|>{"name": "f", "parameters": {}}', "; "],
    "pythonic": ["[f(a=1), g(b='x')]", "<|python_start|>[f(a=1)]<|python_end|>"],
    "mistral": ['[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}]', '[TOOL_CALLS]f[ARGS]{"a": 1}'],
    "deepseek_v3": ["<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n"
                    '```json\n{"a": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>', "r</think>"],
    "kimi_k2": ['<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{"a": 1}'
                "<|tool_call_end|><|tool_calls_section_end|>"],
    "harmony": ["<|channel|>analysis<|message|>r<|end|>", "<|start|>assistant<|channel|>final<|message|>c<|return|>",
                '<|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a":1}<|call|>'],
    "": ["Here's my thought process: x Here's my response: y"],
}
CHAINS = [("hermes", "qwen3"), ("qwen3_coder", ""), ("llama3_json", ""), ("pythonic", ""), ("mistral", ""),
          ("deepseek_v3", "deepseek_r1"), ("kimi_k2", ""), ("harmony", "gpt_oss"), ("", "granite")]


def random_output(rng: random.Random, samples: list[str]) -> str:
    pieces = []
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        if choice < 0.35:
            pieces.append(rng.choice(samples))
        elif choice < 0.5:
            sample = rng.choice(samples)
            pieces.append(sample[: rng.randint(1, len(sample))])
        else:
            pieces.append(rng.choice(FRAGMENTS))
    return "".join(pieces)


@pytest.mark.parametrize("tool_parser,reasoning_parser", CHAINS)
def test_random_outputs(tool_parser, reasoning_parser):
    rng = random.Random(f"{tool_parser}/{reasoning_parser}")
    make = chain_maker(tool_parser, reasoning_parser, tools=[{"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}}}])
    calls = 0
    for _ in range(200):
        text = random_output(rng, SAMPLES[tool_parser])
        unary = simplify(run(make(), [text]))
        calls += sum(1 for segment in unary if segment[0] == "call")
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 6)))) if len(text) > 1 else []
        pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        assert simplify(run(make(), pieces)) == unary, (text, pieces)
        assert simplify(run(make(), list(text))) == unary, text
    assert calls > 0 or not tool_parser
