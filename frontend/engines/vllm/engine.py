"""vLLM's ``AsyncLLM`` as an engine of the worker SDK: token ids in, token ids out.

Each request runs as one task that iterates ``AsyncLLM.generate`` and forwards every delta to the request's
:class:`TokenSink`; aborting cancels the task, and ``generate`` aborts the request inside vLLM when it is
cancelled. A request vLLM refuses (a sampling value out of range, a schema its grammar backend cannot
compile) ends with ``invalid`` set, so the client gets a 400 with vLLM's reason.

Load: vLLM reports its scheduler's state after every step to the stat loggers; :class:`LoadStatLogger` turns
that into the SDK's load report (running and waiting requests, KV blocks in use), and adds up the prompt tokens
of every step by where their KV came from (computed, prefix-cache hit, transferred from a prefill worker) for the
worker's ``/metrics``.

Disaggregated serving: a prefill leg (``remote_decode``) or a decode leg (``kv_transfer_params``) passes vLLM's
KV-transfer parameters in its sampling parameters (sampling.py); the prefill leg's last output carries vLLM's
answer (where the decode worker finds the KV), which goes back to the frontend as the leg's
``kv_transfer_params`` (None when vLLM gave none: the leg still ends normally and the frontend falls back).

Engine death: when vLLM's engine-core process dies, every request in flight fails with a clear error and
``dead`` completes, so the worker can unregister and exit non-zero.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from vllm.exceptions import VLLMClientError
from vllm.inputs import TokensPrompt
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError
from vllm.v1.metrics.loggers import StatLoggerBase

from ...protocol.engine import GenerateRequest
from ...worker import Engine, TokenSink
from ...worker.load_publisher import LoadPublisher
from ...worker.status_server import MetricRow, PromptTokenSources
from .sampling import sampling_params, token_logprobs

log = logging.getLogger(__name__)

DEATH_POLL_S = 0.5
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort"}


class VllmEngine(Engine):
    """Serves text generation from an ``AsyncLLM`` running in this process (its engine core in a child)."""

    def __init__(self, llm: AsyncLLM, prompt_tokens: PromptTokenSources) -> None:
        self.llm = llm
        self.prompt_tokens = prompt_tokens  # filled by the engine's LoadStatLogger
        self.tasks: dict[str, tuple[asyncio.Task, TokenSink]] = {}
        self.dead: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def add_request(self, request: GenerateRequest, sink: TokenSink) -> None:
        if self.dead.done():
            sink.send([], "error", error=self.dead.result(), retryable=True)
            return
        task = asyncio.get_running_loop().create_task(self._generate(request, sink))
        self.tasks[request.request_id] = (task, sink)

    def abort_request(self, request_id: str) -> None:
        entry = self.tasks.pop(request_id, None)
        if entry is not None:
            entry[0].cancel()  # AsyncLLM.generate aborts the request in the engine when cancelled

    async def _generate(self, request: GenerateRequest, sink: TokenSink) -> None:
        prompt = TokensPrompt(prompt_token_ids=request.token_ids)
        top_n = request.logprobs or 0
        try:
            params = sampling_params(request)  # vLLM validates here and in generate(): one refusal path
            async for output in self.llm.generate(prompt, params, request.request_id):
                completion = output.outputs[0]
                token_ids = list(completion.token_ids)
                reason = FINISH_REASONS.get(completion.finish_reason or "", "stop") if output.finished else None
                sink.send(token_ids, reason, token_logprobs(token_ids, completion.logprobs, top_n),
                          cached_tokens=output.num_cached_tokens or 0,
                          kv_transfer_params=output.kv_transfer_params if output.finished else None)
        except asyncio.CancelledError:
            raise
        except EngineDeadError as exc:
            self._died(f"the vLLM engine died: {exc}")
        except (VLLMClientError, ValueError, TypeError) as exc:
            sink.send([], "error", error=f"vLLM refused the request: {exc}", invalid=True)
        except EngineGenerateError as exc:
            cause = exc.__cause__ or exc
            log.error("vLLM failed a request", extra={"request_id": request.request_id, "error": repr(cause)})
            sink.send([], "error", error=f"vLLM failed the request: {cause}")
        finally:
            entry = self.tasks.get(request.request_id)
            if entry is not None and entry[1] is sink:
                del self.tasks[request.request_id]

    def worker_metrics(self, labels: tuple[tuple[str, str], ...]) -> list[MetricRow]:
        return self.prompt_tokens.rows(labels)

    async def watch_engine(self) -> None:
        """Complete ``dead`` when the engine core dies, even while no request is in flight."""
        while not self.dead.done():
            if self.llm.errored:
                self._died(f"the vLLM engine died: {self.llm.dead_error}")
                return
            await asyncio.sleep(DEATH_POLL_S)

    def _died(self, reason: str) -> None:
        if not self.dead.done():
            log.error("vLLM engine died", extra={"error": reason, "in_flight": len(self.tasks)})
            self.dead.set_result(reason)
        for task, sink in list(self.tasks.values()):
            sink.send([], "error", error=reason, retryable=True)  # another worker can continue it
        self.tasks.clear()


class LoadStatLogger(StatLoggerBase):
    """A vLLM stat logger that publishes the scheduler's load after each step: running and waiting requests,
    and KV blocks in use (vLLM reports a fraction; ``total_blocks`` is set once the engine has sized its cache);
    and adds each step's prompt tokens by source to ``prompt_tokens``.

    ``prompt_tokens.kv_transfers`` stays 0: vLLM reports a step's prompt tokens summed over the requests it
    prefilled, so the requests that received a KV transfer cannot be told apart."""

    def __init__(self, publisher: LoadPublisher) -> None:
        self.publisher = publisher
        self.total_blocks = 0
        self.prompt_tokens = PromptTokenSources()

    def factory(self) -> Callable:
        """What ``AsyncLLM.from_engine_args(stat_loggers=[...])`` takes: (vllm_config, engine_index) -> logger."""
        return lambda vllm_config, engine_index=0: self

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
        if scheduler_stats is not None:
            self.publisher.report(scheduler_stats.num_running_reqs, scheduler_stats.num_waiting_reqs,
                                  round(scheduler_stats.kv_cache_usage * self.total_blocks))
        if iteration_stats is not None:
            by_source = iteration_stats.prompt_token_stats
            self.prompt_tokens.local_compute += by_source.computed
            self.prompt_tokens.local_cache_hit += by_source.local_cache_hit
            self.prompt_tokens.external_kv_transfer += by_source.external_kv_transfer

    def log_engine_initialized(self) -> None:
        pass
