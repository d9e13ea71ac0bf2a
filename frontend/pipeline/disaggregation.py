"""Disaggregated serving: a request's prompt is prefilled on a prefill worker, then decoded on another worker.

When a model has prefill workers (``disaggregation_mode: prefill`` in their cards) and one is reachable, a
generation starts with its prefill leg (:func:`first_submission`): the engine request with ``remote_decode`` set,
one token to make and no sampling constraint, sent to a prefill worker picked by the router (in ``kv`` mode by
prefix overlap and prefill load). The prefill worker computes the prompt's KV, keeps it, and ends the leg with
``kv_transfer_params``: where the KV is (opaque here; vLLM's NixlConnector reads it). Its token is dropped. The
decode leg is the original request with those params, sent to a decode worker picked by decode load (and the KV
it already holds), which pulls the KV and generates every output token: the client sees one normal response
whose time to first token is the decode side's.

Failures: a prefill leg that fails (its worker gone, an engine error, no params in its answer) is tried again on
a prefill worker not tried yet; when none is left, the decode worker prefills the prompt itself
(``--decode-fallback``, on by default) or the request fails with the prefill's error. A request the engine
refused as invalid fails at once. A model whose prefill workers are all unreachable is served whole by its other
workers. ``disagg_transfers_total``, ``disagg_transfer_failures_total`` and ``disagg_fallbacks_total`` count them.
"""

from __future__ import annotations

import msgspec

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..gateway.submission import Submission
from ..protocol.engine import GenerateRequest, RequestOutput, SamplingOptions
from ..protocol.errors import RequestError, ServiceUnavailable, worker_failure
from ..router.select import DECODE, PREFILL


class PrefillLeg:
    """The prefill side of one disaggregated request: which prefill workers it was tried on, and the legs it
    submits (``submit`` for a prefill worker, ``decode`` for the decode worker)."""

    __slots__ = ("gateway", "model", "request", "block_hashes", "pinned", "pinned_prefill", "tried")

    def __init__(self, gateway: Gateway, model: ServedModel, request: GenerateRequest, block_hashes: bytes,
                 pinned: str | None, pinned_prefill: str | None = None) -> None:
        self.gateway = gateway
        self.model = model
        self.request = request
        self.block_hashes = block_hashes
        self.pinned = pinned  # the decode worker the client named, if any
        self.pinned_prefill = pinned_prefill  # the prefill worker it named: tried alone
        self.tried: list[str] = []

    def submit(self) -> Submission:
        """Send the prefill leg to a prefill worker it was not tried on (``ServiceUnavailable`` when none is
        left, ``WorkersBusy`` when they all are)."""
        if self.pinned_prefill is not None and self.tried:
            raise ServiceUnavailable(f"the named prefill worker `{self.pinned_prefill}` failed the request")
        request = self.request
        leg = msgspec.structs.replace(
            request, request_id=self.gateway.new_request_id(), remote_decode=True, logprobs=None,
            sampling=SamplingOptions(temperature=0.0),  # the token is dropped: no constraint to compile
            stop=msgspec.structs.replace(request.stop, max_tokens=1, min_tokens=0, ignore_eos=True, stop_token_ids=[],
                                         max_thinking_tokens=None))
        submission = self.gateway.submit(self.model, leg, prompt_tokens=len(request.token_ids),
                                         block_hashes=self.block_hashes, pinned=self.pinned_prefill, avoid=self.tried,
                                         leg=PREFILL)
        self.tried.append(submission.route.instance_id)
        return submission

    def decode(self, kv_transfer_params: dict) -> Submission:
        """Send the decode leg: the request with the prefill's params, to a worker that is not a prefill worker."""
        self._count("disagg_transfers_total")
        return self.gateway.submit(self.model, msgspec.structs.replace(self.request,
                                                                       kv_transfer_params=kv_transfer_params),
                                   prompt_tokens=len(self.request.token_ids), block_hashes=self.block_hashes,
                                   pinned=self.pinned, leg=DECODE)

    def failed(self, reason: str) -> Submission | None:
        """The leg failed (``reason``: worker_gone, engine_error, no_kv_transfer_params): the next submission, on
        another prefill worker, or the whole request on a decode worker (``--decode-fallback``); None when there
        is neither (the caller reports the prefill's failure)."""
        self._count("disagg_transfer_failures_total", reason)
        try:
            return self.submit()
        except RequestError:
            if not self.gateway.settings.router.decode_fallback:
                return None
        self._count("disagg_fallbacks_total", "prefill_failed")
        return submit_whole(self.gateway, self.model, self.request, self.block_hashes, self.pinned)

    def _count(self, metric: str, reason: str | None = None) -> None:
        labels = (("model", self.model.name),) if reason is None else (("model", self.model.name), ("reason", reason))
        self.gateway.metrics.inc(metric, labels)


def first_submission(gateway: Gateway, model: ServedModel, request: GenerateRequest, block_hashes: bytes,
                     pinned: str | None, pinned_prefill: str | None = None) -> tuple[Submission, PrefillLeg | None]:
    """A generation's first submission: its prefill leg when the model has a reachable prefill worker (with the
    :class:`PrefillLeg` that continues it), else the whole request. ``pinned`` names the worker that decodes
    (or serves the whole request), ``pinned_prefill`` the prefill worker (503 when it is not one)."""
    if model.prefill_ids:
        if gateway.prefill_workers(model) or pinned_prefill is not None:
            prefill = PrefillLeg(gateway, model, request, block_hashes, pinned, pinned_prefill)
            return prefill.submit(), prefill
        gateway.metrics.inc("disagg_fallbacks_total", (("model", model.name), ("reason", "no_prefill_worker")))
    return submit_whole(gateway, model, request, block_hashes, pinned), None


def submit_whole(gateway: Gateway, model: ServedModel, request: GenerateRequest, block_hashes: bytes,
                 pinned: str | None) -> Submission:
    """The request served whole by a worker that is not a prefill worker."""
    return gateway.submit(model, request, prompt_tokens=len(request.token_ids), block_hashes=block_hashes,
                          pinned=pinned)


def prefill_result(output: RequestOutput) -> tuple[dict | None, str, RequestError | None]:
    """What the last output of a prefill leg says: ``(kv_transfer_params, "", None)`` when it succeeded, else
    ``(None, reason, error)``; reason ``invalid``: the engine refused the request (trying again cannot help)."""
    if output.finish_reason == "error":
        error = worker_failure(output.error or "the prefill worker failed the request", invalid=output.invalid)
        return None, "invalid" if output.invalid else "engine_error", error
    if output.kv_transfer_params is None:
        return None, "no_kv_transfer_params", worker_failure(
            f"the prefill worker ended the prefill ({output.finish_reason}) without KV transfer parameters")
    return output.kv_transfer_params, "", None
