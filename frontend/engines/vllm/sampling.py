"""The engine request of the worker SDK in vLLM's terms, and vLLM's outputs back in the SDK's.

Every field of :class:`GenerateRequest` maps to :class:`vllm.SamplingParams`: ``None`` keeps vLLM's default.
Stop strings never reach vLLM (the frontend matches them on the text), so vLLM does not detokenize at all
(``detokenize=False``) and streams deltas (``RequestOutputKind.DELTA``). Structured output goes to vLLM's
``structured_outputs`` (json schema, regex, choice, grammar). The two legs of a disaggregated request carry
vLLM's ``kv_transfer_params`` (read by its KV connector, e.g. NixlConnector) in ``extra_args``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from vllm import SamplingParams
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

from ...protocol.engine import GenerateRequest, GuidedDecoding, TokenLogprob


def sampling_params(request: GenerateRequest) -> SamplingParams:
    """vLLM's sampling parameters for one request; vLLM's ValueError for a value it rejects."""
    sampling, stop = request.sampling, request.stop
    fields: dict[str, Any] = {
        "n": 1,
        "max_tokens": stop.max_tokens,
        "min_tokens": stop.min_tokens,
        "stop_token_ids": list(stop.stop_token_ids) or None,
        "ignore_eos": stop.ignore_eos,
        "logprobs": request.logprobs,
        "detokenize": False,
        "skip_special_tokens": False,
        "output_kind": RequestOutputKind.DELTA,
    }
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
                 "repetition_penalty"):
        value = getattr(sampling, name)
        if value is not None:
            fields[name] = value
    if stop.max_thinking_tokens is not None:
        fields["thinking_token_budget"] = stop.max_thinking_tokens
    if sampling.guided is not None:
        fields["structured_outputs"] = structured_outputs(sampling.guided)
    transfer = kv_transfer_params(request)
    if transfer is not None:
        fields["extra_args"] = {"kv_transfer_params": transfer}
    return SamplingParams(**fields)


def kv_transfer_params(request: GenerateRequest) -> dict | None:
    """What vLLM's KV connector reads for one leg of a disaggregated request (None for a whole request).

    A prefill leg (``remote_decode``) asks the connector to keep the prompt's KV for a remote decode worker;
    vLLM's last output then names where it is. A decode leg passes that answer as it came, and the connector
    pulls the KV from the prefill worker before decoding."""
    if request.remote_decode:
        return {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                "remote_block_ids": None, "remote_host": None, "remote_port": None}
    return request.kv_transfer_params


def structured_outputs(guided: GuidedDecoding) -> StructuredOutputsParams:
    """The frontend's validated guided-decoding request as vLLM's structured-output parameters.

    ``backend`` and whitespace handling are vLLM's per-engine settings, not per request: start the worker with
    ``--structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}'`` for compact JSON
    (a weak model can otherwise pad a JSON document with whitespace until ``max_tokens``).
    """
    return StructuredOutputsParams(json=guided.json, regex=guided.regex, choice=guided.choice,
                                   grammar=guided.grammar, whitespace_pattern=guided.whitespace_pattern)


def token_logprobs(token_ids: Sequence[int], logprobs: Sequence[Mapping[int, Any]] | None,
                   top_n: int) -> list[TokenLogprob] | None:
    """vLLM's per-position ``{token_id: Logprob}`` maps as the SDK's logprobs: the chosen token's logprob and
    the ``top_n`` most likely alternatives (by vLLM's rank)."""
    if logprobs is None:
        return None
    result = []
    for token_id, candidates in zip(token_ids, logprobs):
        chosen = candidates.get(token_id)
        ranked = sorted(((entry.rank or 0, tid, entry.logprob) for tid, entry in candidates.items()
                         if entry.rank is not None and entry.rank <= top_n))
        result.append(TokenLogprob(token_id, chosen.logprob if chosen is not None else float("-inf"),
                                   [(tid, logprob) for _, tid, logprob in ranked]))
    return result
