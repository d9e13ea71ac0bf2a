"""The SDK's engine request in vLLM's terms (frontend/engines/vllm/sampling.py), and vLLM's logprobs back."""

from __future__ import annotations

import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from vllm_support import require_vllm  # noqa: E402

require_vllm()

from vllm.exceptions import VLLMClientError  # noqa: E402
from vllm.logprobs import Logprob  # noqa: E402
from vllm.sampling_params import RequestOutputKind  # noqa: E402

from frontend.engines.vllm.sampling import sampling_params, token_logprobs  # noqa: E402
from frontend.protocol.engine import (GenerateRequest, GuidedDecoding, SamplingOptions, StopConditions,  # noqa: E402
                                      TokenLogprob)


def request(**sampling) -> GenerateRequest:
    guided = sampling.pop("guided", None)
    stop = sampling.pop("stop", StopConditions(max_tokens=16))
    return GenerateRequest("r1", [1, 2, 3], stop, SamplingOptions(guided=guided, **sampling), logprobs=None)


def test_every_field_maps():
    stop = StopConditions(max_tokens=40, min_tokens=3, stop_token_ids=[7, 9], ignore_eos=True)
    params = sampling_params(request(temperature=0.7, top_p=0.9, top_k=20, min_p=0.05, seed=11,
                                     presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.2, stop=stop))
    assert (params.temperature, params.top_p, params.top_k, params.min_p, params.seed) == (0.7, 0.9, 20, 0.05, 11)
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (0.5, -0.5, 1.2)
    assert (params.max_tokens, params.min_tokens, params.stop_token_ids, params.ignore_eos) == (40, 3, [7, 9], True)
    assert params.n == 1 and params.stop in (None, [])  # stop strings are the frontend's
    assert params.detokenize is False and params.output_kind == RequestOutputKind.DELTA


def test_unset_fields_keep_vllms_defaults():
    params = sampling_params(request())
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (1.0, 1.0, 0, None)
    assert params.logprobs is None and params.structured_outputs is None


def test_logprobs_and_guided_decoding():
    req = request(guided=GuidedDecoding(regex=r"[0-9]+"))
    req.logprobs = 3
    params = sampling_params(req)
    assert params.logprobs == 3 and params.structured_outputs.regex == r"[0-9]+"
    schema = {"type": "object"}
    assert sampling_params(request(guided=GuidedDecoding(json=schema))).structured_outputs.json == schema
    assert sampling_params(request(guided=GuidedDecoding(choice=["a", "b"]))).structured_outputs.choice == ["a", "b"]


def test_values_vllm_refuses_raise_its_error():
    with pytest.raises(VLLMClientError, match="top_p"):
        sampling_params(request(top_p=0.0))


def test_token_logprobs_keep_the_top_n_by_rank_and_the_chosen_token():
    positions = [{5: Logprob(-0.1, 1), 6: Logprob(-2.5, 2), 8: Logprob(-3.0, 3)},
                 {9: Logprob(-4.0, 7), 5: Logprob(-0.2, 1), 6: Logprob(-1.9, 2)}]
    result = token_logprobs([5, 9], positions, 2)
    assert result == [TokenLogprob(5, -0.1, [(5, -0.1), (6, -2.5)]), TokenLogprob(9, -4.0, [(5, -0.2), (6, -1.9)])]
    assert token_logprobs([5], None, 2) is None
    only_chosen = token_logprobs([4], [{4: Logprob(-1.5, 3)}], 0)
    assert only_chosen == [TokenLogprob(4, -1.5, [])] and not math.isinf(only_chosen[0].logprob)
