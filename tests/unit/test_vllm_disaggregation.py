"""The vLLM worker's side of disaggregated serving: the KV connector per role (frontend/engines/vllm/
disaggregation.py), the two legs' KV-transfer parameters (sampling.py, engine.py) and the prompt tokens by
source (engine.py's stat logger)."""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from vllm_support import require_vllm  # noqa: E402

require_vllm()

from vllm.config import KVTransferConfig  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402

from frontend.engines.vllm.disaggregation import (SIDE_CHANNEL_HOST, SIDE_CHANNEL_PORT,  # noqa: E402
                                                  configure_disaggregation, nixl_transfer_config)
from frontend.engines.vllm.sampling import sampling_params  # noqa: E402
from frontend.protocol.engine import GenerateRequest, StopConditions  # noqa: E402
from frontend.worker.status_server import PromptTokenSources  # noqa: E402

with warnings.catch_warnings():  # AsyncLLM's imports reach torch modules that warn of their own deprecations
    warnings.simplefilter("ignore", DeprecationWarning)
    from frontend.engines.vllm.engine import LoadStatLogger, VllmEngine

PREFILL_ANSWER = {"do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [[1, 2]],
                  "remote_engine_id": "prefill-1", "remote_host": "127.0.0.1", "remote_port": 5601}


def request(**fields) -> GenerateRequest:
    return GenerateRequest("r1", [1, 2, 3], StopConditions(max_tokens=4), **fields)


# ---- the legs' KV-transfer parameters ------------------------------------------------------------------------


def test_a_prefill_leg_asks_vllm_to_keep_the_kv_for_a_remote_decode():
    params = sampling_params(request(remote_decode=True))
    assert params.extra_args == {"kv_transfer_params": {
        "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None, "remote_block_ids": None,
        "remote_host": None, "remote_port": None}}


def test_a_decode_leg_passes_the_prefill_answer_as_it_came():
    assert sampling_params(request(kv_transfer_params=PREFILL_ANSWER)).extra_args == {
        "kv_transfer_params": PREFILL_ANSWER}


def test_a_whole_request_has_no_transfer_parameters():
    assert not sampling_params(request()).extra_args


class FakeLlm:
    """``AsyncLLM.generate`` giving the outputs it was made with."""

    def __init__(self, outputs: list) -> None:
        self.outputs = outputs
        self.params = None

    async def generate(self, prompt, params, request_id):
        self.params = params
        for output in self.outputs:
            yield output


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, token_ids, finish_reason=None, logprobs=None, **fields) -> None:
        self.sent.append((token_ids, finish_reason, fields.get("kv_transfer_params")))


def output(token_ids: list[int], finished: bool, kv_transfer_params: dict | None = None) -> SimpleNamespace:
    completion = SimpleNamespace(token_ids=token_ids, finish_reason="length" if finished else None, logprobs=None)
    return SimpleNamespace(outputs=[completion], finished=finished, num_cached_tokens=0,
                           kv_transfer_params=kv_transfer_params)


def run_leg(outputs: list, leg: GenerateRequest) -> list[tuple]:
    sink = RecordingSink()

    async def run() -> None:
        engine = VllmEngine(FakeLlm(outputs), PromptTokenSources())
        engine.add_request(leg, sink)
        await engine.tasks[leg.request_id][0]

    asyncio.run(run())
    return sink.sent


def test_the_prefill_legs_last_output_carries_vllms_answer():
    assert run_leg([output([7], True, PREFILL_ANSWER)], request(remote_decode=True)) == [([7], "length",
                                                                                          PREFILL_ANSWER)]


def test_a_prefill_leg_without_an_answer_still_ends_normally():
    assert run_leg([output([7], True)], request(remote_decode=True)) == [([7], "length", None)]


def test_only_the_last_output_carries_transfer_parameters():
    sent = run_leg([output([1], False, {"early": True}), output([2], True)], request(kv_transfer_params={}))
    assert sent == [([1], None, None), ([2], "length", None)]


# ---- the KV connector of each role ---------------------------------------------------------------------------


def test_each_role_gets_nixl_with_its_kv_role():
    prefill, decode = nixl_transfer_config("prefill"), nixl_transfer_config("decode")
    assert (prefill.kv_connector, prefill.kv_role, prefill.kv_load_failure_policy) == (
        "NixlConnector", "kv_producer", "fail")
    assert (decode.kv_connector, decode.kv_role, decode.kv_load_failure_policy) == (
        "NixlConnector", "kv_consumer", "recompute")  # a dead prefill worker costs a recompute, not the request
    assert prefill.kv_buffer_device == "cpu" and prefill.engine_id != decode.engine_id  # vLLM's CPU build


def test_configure_sets_the_connector_and_a_side_channel_port_of_its_own():
    args, environ = AsyncEngineArgs(model="m"), {}
    configure_disaggregation(args, "decode", "127.0.0.1", environ)
    assert args.kv_transfer_config.kv_role == "kv_consumer"
    assert environ[SIDE_CHANNEL_HOST] == "127.0.0.1" and 0 < int(environ[SIDE_CHANNEL_PORT]) < 65536


def test_configure_keeps_what_the_user_set():
    theirs = KVTransferConfig(kv_connector="LMCacheConnectorV1", kv_role="kv_both")
    args, environ = AsyncEngineArgs(model="m", kv_transfer_config=theirs), {SIDE_CHANNEL_PORT: "5999"}
    configure_disaggregation(args, "prefill", "127.0.0.1", environ)
    assert args.kv_transfer_config is theirs and environ == {SIDE_CHANNEL_PORT: "5999"}


def test_an_aggregated_worker_gets_no_connector():
    args, environ = AsyncEngineArgs(model="m"), {}
    configure_disaggregation(args, "agg", "127.0.0.1", environ)
    assert args.kv_transfer_config is None and environ == {}


# ---- prompt tokens by source ---------------------------------------------------------------------------------


def iteration(computed: int, cache_hit: int, external: int) -> SimpleNamespace:
    """What the logger reads of vLLM's ``IterationStats``."""
    return SimpleNamespace(prompt_token_stats=SimpleNamespace(computed=computed, local_cache_hit=cache_hit,
                                                              external_kv_transfer=external))


def test_the_stat_logger_adds_up_prompt_tokens_by_source():
    reports = []
    logger = LoadStatLogger(SimpleNamespace(report=lambda *load: reports.append(load)))
    logger.total_blocks = 100
    scheduler = SimpleNamespace(num_running_reqs=1, num_waiting_reqs=2, kv_cache_usage=0.25)
    logger.record(scheduler, iteration(10, 32, 0))
    logger.record(None, iteration(1, 0, 128))
    logger.record(scheduler, None)
    sources = logger.prompt_tokens
    assert (sources.local_compute, sources.local_cache_hit, sources.external_kv_transfer) == (11, 32, 128)
    assert reports == [(1, 2, 25), (1, 2, 25)]
    rows = {row.labels[-1][1]: row.value for row in sources.rows(()) if row.name == "worker_prompt_tokens_total"}
    assert rows == {"local_compute": 11, "local_cache_hit": 32, "external_kv_transfer": 128}
