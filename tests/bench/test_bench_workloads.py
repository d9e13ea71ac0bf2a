"""Workload generation: exact token lengths, shared prefixes, history resend, request bodies, traces."""

from __future__ import annotations

import json
import random
import statistics

import msgspec
import pytest

from bench import workloads
from bench.config import ProfileConfig, parse_extra_inputs, parse_goodput, validate
from bench.endpoints import chat_messages, completion_prompt, request_body
from bench.metrics import GOODPUT_TAGS
from bench.trace import load_trace


def config(**fields) -> ProfileConfig:
    return ProfileConfig(model="tiny", **fields)


@pytest.mark.parametrize("length", [1, 7, 64, 256, 1000])
def test_prompts_have_the_exact_token_length(prompts, tiny_tokenizer, length):
    rng = random.Random(length)
    for _ in range(5):
        assert tiny_tokenizer.count(prompts.exact(length, rng)) == length


def test_synthetic_workload_lengths_seed_and_stddev(prompts, tiny_tokenizer):
    work = workloads.synthetic(prompts, config(isl=120, isl_stddev=30, osl=16, osl_stddev=4, random_seed=5), 60)
    lengths = [s.turns[0].tokens for s in work.sessions]
    assert [tiny_tokenizer.count(s.turns[0].text) for s in work.sessions] == lengths
    assert 105 < statistics.mean(lengths) < 135 and 15 < statistics.stdev(lengths) < 45
    assert len({s.turns[0].text for s in work.sessions}) == 60
    again = workloads.synthetic(prompts, config(isl=120, isl_stddev=30, osl=16, osl_stddev=4, random_seed=5), 60)
    assert again == work
    other = workloads.synthetic(prompts, config(isl=120, isl_stddev=30, osl=16, osl_stddev=4, random_seed=6), 60)
    assert other.sessions[0].turns[0].text != work.sessions[0].turns[0].text
    assert all(s.turns[0].max_tokens >= 1 for s in work.sessions)


def test_fixed_lengths_without_stddev(prompts):
    work = workloads.synthetic(prompts, config(isl=50, osl=9), 10)
    assert {(s.turns[0].tokens, s.turns[0].max_tokens) for s in work.sessions} == {(50, 9)}


def test_sessions_share_one_system_prompt_and_resend_history(prompts, tiny_tokenizer):
    cfg = config(num_sessions=3, session_turns=4, shared_prefix_length=200, isl=20, osl=5)
    work = workloads.build(prompts, cfg)
    assert work.kind == "sessions" and work.request_total == 12
    assert len({s.system for s in work.sessions}) == 1
    assert tiny_tokenizer.count(work.sessions[0].system) == 200
    session = work.sessions[1]
    answers = ["first answer", "second answer"]
    messages = chat_messages(session, 2, answers)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "first answer" and messages[-1]["content"] == session.turns[2].text
    prompt = completion_prompt(session, 1, answers)
    assert prompt == "\n\n".join([session.system, session.turns[0].text, "first answer", session.turns[1].text])
    assert work.turn_inputs()[(1, 0)] == 220 and work.turn_inputs()[(1, 3)] == 20


def test_request_bodies_per_endpoint_type(prompts):
    session = workloads.synthetic(prompts, config(isl=10, osl=12), 1).sessions[0]
    chat = msgspec.json.decode(request_body(config(streaming=True, extra_inputs={"temperature": 0.5,
                                                                                 "ignore_eos": False}),
                                            session, 0, []))
    assert chat["model"] == "tiny" and chat["messages"] == [{"role": "user", "content": session.turns[0].text}]
    assert chat["max_tokens"] == 12 and chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}
    assert chat["temperature"] == 0.5 and chat["ignore_eos"] is False  # --extra-inputs win
    completion = msgspec.json.decode(request_body(config(endpoint_type="completions"), session, 0, []))
    assert completion["prompt"] == session.turns[0].text and completion["ignore_eos"] is True
    assert completion["stream"] is False and "stream_options" not in completion
    no_eos = msgspec.json.decode(request_body(config(ignore_eos=False), session, 0, []))
    assert "ignore_eos" not in no_eos
    embedding = msgspec.json.decode(request_body(config(endpoint_type="embeddings"), session, 0, []))
    assert embedding == {"model": "tiny", "input": session.turns[0].text}


def test_flag_value_parsers():
    assert parse_extra_inputs(["ignore_eos:true", "top_k:5", "name:a:b", "obj:{\"x\": 1}"]) == {
        "ignore_eos": True, "top_k": 5, "name": "a:b", "obj": {"x": 1}}
    assert parse_goodput("time_to_first_token:200 inter_token_latency:20", GOODPUT_TAGS) == {
        "time_to_first_token": 200.0, "inter_token_latency": 20.0}
    with pytest.raises(ValueError, match="unknown metric"):
        parse_goodput("ttft:200", GOODPUT_TAGS)
    with pytest.raises(ValueError, match="needs a number"):
        parse_goodput("time_to_first_token:fast", GOODPUT_TAGS)
    with pytest.raises(ValueError, match="--fixed-schedule"):
        validate(config(fixed_schedule=True))
    with pytest.raises(ValueError, match="embeddings do not stream"):
        validate(config(endpoint_type="embeddings", streaming=True))


def write_trace(path, lines) -> str:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_trace_blocks_with_equal_hash_ids_are_equal_text(prompts, tiny_tokenizer, tmp_path):
    trace = write_trace(tmp_path / "trace.jsonl", [
        {"timestamp": 1000, "input_length": 1024, "output_length": 8, "hash_ids": [1, 2]},
        {"timestamp": 1500, "input_length": 700, "output_length": 4, "hash_ids": [1, 3]},
        {"timestamp": 2000, "input_length": 300, "output_length": 2, "hash_ids": [9]},
        {"timestamp": 2500, "input_length": 600, "output_length": 2},
    ])
    work = load_trace(trace, prompts, config(input_file=trace, fixed_schedule=True))
    a, b, c, d = (s.turns[0] for s in work.sessions)
    assert [s.timestamp_ms for s in work.sessions] == [0, 500, 1000, 1500]
    assert [t.max_tokens for t in (a, b, c, d)] == [8, 4, 2, 2]
    block = prompts.text_of(prompts.tokenizer.encode(a.text)[:400])
    assert b.text.startswith(block[:-20])             # the shared first block
    assert not c.text.startswith(block[:40])          # another block
    for turn, length in ((a, 1024), (b, 700), (c, 300), (d, 600)):
        assert abs(turn.tokens - length) <= 4 and turn.tokens == tiny_tokenizer.count(turn.text)


def test_trace_errors_name_the_line(prompts, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 10}\n{"timestamp": 5}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_trace(bad, prompts, config())
