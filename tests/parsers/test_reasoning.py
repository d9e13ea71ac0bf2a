"""Reasoning parsers: deepseek_r1, qwen3 (prompt-opened <think> too) and granite."""

from __future__ import annotations

import pytest
from parser_support import chain_maker, parse_everywhere


def test_qwen3_think_block():
    make = chain_maker("", "qwen3")
    assert parse_everywhere(make, "<think>\nStep 1.\nStep 2.\n</think>\n\nThe answer.") == [
        ("reasoning", "Step 1.\nStep 2."), ("content", "The answer.")]


def test_qwen3_without_think_is_content():
    make = chain_maker("", "qwen3")
    text = "\n Plain answer with </think> inside."
    assert parse_everywhere(make, text) == [("content", text)]


def test_qwen3_prompt_opened_think():
    make = chain_maker("", "qwen3", prompt_tail="<|im_start|>assistant\n<think>\n")
    assert parse_everywhere(make, "Thinking.</think>Answer.") == [("reasoning", "Thinking."), ("content", "Answer.")]


def test_qwen3_prompt_closed_think_and_enable_thinking_false():
    closed = chain_maker("", "deepseek_r1", prompt_tail="assistant\n<think>\n\n</think>\n\n")
    assert parse_everywhere(closed, "Answer.") == [("content", "Answer.")]
    disabled = chain_maker("", "deepseek_r1", enable_thinking=False)
    assert parse_everywhere(disabled, "Answer.") == [("content", "Answer.")]


def test_deepseek_r1_reasons_from_the_first_token():
    make = chain_maker("", "deepseek_r1")
    assert parse_everywhere(make, "Hmm.\n</think>\n\nYes.") == [("reasoning", "Hmm."), ("content", "Yes.")]
    assert parse_everywhere(make, "<think>Hmm.</think>Yes.") == [("reasoning", "Hmm."), ("content", "Yes.")]


def test_unfinished_reasoning_stays_reasoning():
    make = chain_maker("", "deepseek_r1")
    assert parse_everywhere(make, "Still thinking </thi") == [("reasoning", "Still thinking </thi")]
    assert parse_everywhere(chain_maker("", "qwen3"), "<thi") == [("content", "<thi")]


@pytest.mark.parametrize("start,end", [("Here's my thought process:", "Here's my response:"),
                                       ("Here is my thought process:", "Here is my response:")])
def test_granite(start, end):
    make = chain_maker("", "granite")
    assert parse_everywhere(make, f"{start}\nI think.\n{end}\nHello!") == [
        ("reasoning", "I think."), ("content", "Hello!")]


def test_granite_plain():
    assert parse_everywhere(chain_maker("", "granite"), "Hello there!") == [("content", "Hello there!")]
