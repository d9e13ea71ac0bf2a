"""Dynamo's metric names in frontend/observability/metrics.py: histogram buckets from DYN_METRICS_* variables, the
request counters, per-worker "last" gauges merged across processes, and the model gauges of /metrics."""

from __future__ import annotations

import logging
import os
import time
from types import SimpleNamespace
from unittest.mock import Mock

import msgspec
import pytest

from frontend.gateway.state import Gateway
from frontend.http import info
from frontend.observability import metrics as m
from frontend.observability.metrics import (CURRENT_REQUEST, GenerationObserver, Metrics, RequestRecord, Snapshot,
                                            WorkerTiming, dynamo_buckets, histograms_from_env, merge, render)
from frontend.protocol.engine import EmbedRequest, GenerateRequest
from frontend.protocol.errors import WorkersBusy
from frontend.router.select import Route

# the bucket bounds Dynamo 1.6.1's frontend answered with its defaults (a scrape of its /metrics)
DYNAMO_1_6_1 = {
    "time_to_first_token_seconds": "0 0.0022 0.0047 0.01 0.022 0.047 0.1 0.22 0.47 1 2.2 4.7 10 22 48 100 220 480",
    "inter_token_latency_seconds": "0 0.0018 0.0033 0.0059 0.011 0.02 0.035 0.064 0.12 0.21 0.38 0.69 1.2 2.3 4.1 7.4 "
                                   "13 24 44 80",
    "request_duration_seconds": "0 2 4 8 16 32 64 130 260 510",
    "input_sequence_tokens": "0 100 210 430 870 1800 3600 7400 15000 31000 63000 130000",
    "output_sequence_tokens": "0 100 210 430 880 1800 3700 7600 16000 32000",
}


@pytest.mark.parametrize("name", sorted(DYNAMO_1_6_1))
def test_dynamo_bucket_generation_matches_dynamo(name):
    _, low, high, count = m.BUCKET_ENV[name]
    assert dynamo_buckets(low, high, count) == tuple(float(b) for b in DYNAMO_1_6_1[name].split())


def test_unset_variables_keep_the_default_buckets():
    histograms, problems = histograms_from_env({})
    assert histograms == m.DEFAULT_HISTOGRAMS and problems == []


def test_one_variable_gives_dynamo_buckets_with_its_defaults_for_the_others():
    histograms, problems = histograms_from_env({"DYN_METRICS_TTFT_COUNT": "5", "DYN_METRICS_INPUT_SEQUENCE_MAX": "1e6"})
    assert problems == []
    assert histograms["time_to_first_token_seconds"][1] == dynamo_buckets(0.001, 480.0, 5) == (0.0, 0.026, 0.69, 18.0,
                                                                                               480.0)
    assert histograms["input_sequence_tokens"][1] == dynamo_buckets(50.0, 1e6, 12)
    assert histograms["cached_tokens"][1] == histograms["input_sequence_tokens"][1]  # as in Dynamo
    assert histograms["inter_token_latency_seconds"] == m.DEFAULT_HISTOGRAMS["inter_token_latency_seconds"]


@pytest.mark.parametrize("environ, problem", [
    ({"DYN_METRICS_ITL_MIN": "fast"}, "cannot parse DYN_METRICS_ITL_MIN='fast'"),
    ({"DYN_METRICS_ITL_COUNT": "2.5"}, "cannot parse DYN_METRICS_ITL_COUNT='2.5'"),
    ({"DYN_METRICS_ITL_MIN": "3", "DYN_METRICS_ITL_MAX": "2"}, "make no buckets"),
    ({"DYN_METRICS_ITL_MIN": "0"}, "make no buckets"),
    ({"DYN_METRICS_ITL_COUNT": "513"}, "make no buckets"),
    ({"DYN_METRICS_ITL_MAX": "inf"}, "make no buckets"),
])
def test_a_bad_value_is_a_warning_and_dynamo_defaults(environ, problem):
    histograms, problems = histograms_from_env(environ)
    assert len(problems) == 1 and problem in problems[0], problems
    assert histograms["inter_token_latency_seconds"][1] == dynamo_buckets(0.001, 80.0, 20)


def test_dynamo_deprecated_doubled_name_still_works():
    histograms, problems = histograms_from_env({"DYN_HISTOGRAM_DYN_METRICS_REQUEST_DURATION_MAX": "64"})
    assert histograms["request_duration_seconds"][1] == dynamo_buckets(1.0, 64.0, 10)
    assert problems == ["DYN_HISTOGRAM_DYN_METRICS_REQUEST_DURATION_MAX is deprecated (as in Dynamo): rename it "
                        "DYN_METRICS_REQUEST_DURATION_MAX"]


def test_bucket_problems_are_logged_once_per_process(monkeypatch, caplog):
    monkeypatch.setattr(m, "BUCKET_PROBLEMS", ["cannot parse X"])
    monkeypatch.setattr(m, "_bucket_problems_reported", False)
    # what a library's logging set-up imported by an earlier test (vLLM's dictConfig) may have turned off
    monkeypatch.setattr(logging.getLogger(m.__name__), "disabled", False)
    monkeypatch.setattr(logging.root.manager, "disable", logging.NOTSET)
    caplog.set_level(logging.WARNING, logger=m.__name__)
    Metrics()
    Metrics()
    assert [r.getMessage() for r in caplog.records] == ["metrics: histogram buckets: cannot parse X"]


# ---- one request ---------------------------------------------------------------------------------------


def _labels(**labels: str) -> tuple:
    return tuple(labels.items())


def test_started_once_at_acceptance_and_failures_by_dynamo_class():
    metrics = Metrics()
    record = RequestRecord("chat_completions")
    record.stream = True
    record.accepted(metrics, "tiny")
    record.accepted(metrics, "tiny")  # the unary calls of one request accept it again
    record.error_type = "overload"
    record.record(metrics)
    started = ("requests_started_total", _labels(model="tiny", endpoint="chat_completions", request_type="stream"))
    assert metrics.counters[started] == 1
    assert metrics.counters[("failures_total", _labels(**{"class": "CapacityExhausted",
                                                           "reason": "capacity.pool_exhausted"}))] == 1
    unknown = RequestRecord("completions")
    unknown.error_type = "something_new"
    unknown.record(metrics)
    assert metrics.counters[("failures_total", _labels(**{"class": "Unknown", "reason": "runtime.unclassified"}))] == 1


def test_observer_accepts_the_request_and_the_first_output_has_no_inter_token_latency():
    metrics = Metrics()
    record = RequestRecord("completions")
    token = CURRENT_REQUEST.set(record)
    try:
        observer = GenerationObserver(metrics, "tiny", stream=False)
    finally:
        CURRENT_REQUEST.reset(token)
    observer.tokens(3)  # the first output carries 3 tokens: one time to first token, no ITL (as in Dynamo)
    observer.tokens(2)
    labels = _labels(model="tiny")
    assert metrics.histograms[("time_to_first_token_seconds", labels)][-1] > 0
    itl = metrics.histograms[("inter_token_latency_seconds", labels)]
    assert sum(itl[:-1]) == 2 and itl[-1] < 60  # two latencies of a few microseconds, not the clock's value
    assert metrics.counters[("requests_started_total", _labels(model="tiny", endpoint="completions",
                                                               request_type="unary"))] == 1
    assert metrics.gauges[("inflight_requests", labels)] == 1


def test_worker_timing_sets_last_values_by_worker():
    metrics = Metrics()
    timing = WorkerTiming(metrics, time.perf_counter() - 0.25, prompt_tokens=42)
    timing.tokens("w1", 1)
    timing.tokens("w1", 4)
    timing.tokens("w2", 2)  # migrated: the next outputs are the other worker's
    first = _labels(worker_id="w1", dp_rank="0", worker_type="decode")
    second = _labels(worker_id="w2", dp_rank="0", worker_type="decode")
    assert 0.25 <= metrics.latest[("worker_last_time_to_first_token_seconds", first)][0] < 5
    assert metrics.latest[("worker_last_input_sequence_tokens", first)][0] == 42
    assert 0 <= metrics.latest[("worker_last_inter_token_latency_seconds", first)][0] < 1
    assert ("worker_last_inter_token_latency_seconds", second) in metrics.latest
    assert ("worker_last_time_to_first_token_seconds", second) not in metrics.latest


def test_worker_timing_follows_a_worker_from_its_first_output_even_without_tokens():
    """A migration's first output may carry no token: the worker's labels change then, not at its first token (the
    native plain-token path writes the latest ITL under ``timing.labels``)."""
    metrics = Metrics()
    timing = WorkerTiming(metrics, time.perf_counter(), prompt_tokens=8)
    timing.tokens("w1", 1)
    timing.serving("w2")
    assert timing.labels == _labels(worker_id="w2", dp_rank="0", worker_type="decode")
    timing.tokens("w2", 1)
    assert ("worker_last_inter_token_latency_seconds", timing.labels) in metrics.latest


def test_rejections_and_kv_hit_rate():
    metrics = Metrics()
    metrics.model_rejected("tiny", "chat_completions")
    metrics.kv_routed("tiny", 3, 4)
    metrics.kv_routed("tiny", 9, 4)  # more cached blocks than full prompt blocks: a rate of 1
    metrics.kv_routed("tiny", 0, 0)
    assert metrics.counters[("model_rejection_total", _labels(model="tiny", endpoint="chat_completions"))] == 1
    state = metrics.histograms[("kv_hit_rate", _labels(model="tiny"))]
    bounds = m.HISTOGRAMS["kv_hit_rate"][1]
    assert state[-1] == 1.75 and state[bounds.index(0.75)] == 1 and state[bounds.index(1.0)] == 1 and state[0] == 1


def test_the_gateway_counts_rejections_and_kv_routing_decisions():
    metrics = Metrics()
    model = SimpleNamespace(name="tiny", block_size=16)
    gateway = SimpleNamespace(metrics=metrics, settings=SimpleNamespace(router=SimpleNamespace(mode="kv")),
                              _reachable=lambda model, avoid, prefill: model,
                              router=SimpleNamespace(pick=Mock(side_effect=WorkersBusy("all busy"))))
    token = CURRENT_REQUEST.set(RequestRecord("completions"))
    try:
        with pytest.raises(WorkersBusy):
            Gateway._route(gateway, model, Mock(spec=GenerateRequest), b"", 40, None, (), "whole")
    finally:
        CURRENT_REQUEST.reset(token)
    assert metrics.counters == {("model_rejection_total", _labels(model="tiny", endpoint="completions")): 1}
    gateway.router.pick = Mock(return_value=Route("w1", 0, 1, 8, overlap_blocks=2))
    Gateway._route(gateway, model, Mock(spec=GenerateRequest), b"", 40, None, (), "whole")  # 2 of 3 blocks cached
    Gateway._route(gateway, model, Mock(spec=GenerateRequest), b"", 40, "w1", (), "whole")  # pinned: no decision
    Gateway._route(gateway, model, Mock(spec=EmbedRequest), b"", 40, None, (), "whole")  # not a generation
    Gateway._route(gateway, model, Mock(spec=GenerateRequest), b"", 40, None, (), "decode")  # its prefill was counted
    assert metrics.histograms[("kv_hit_rate", _labels(model="tiny"))][-1] == pytest.approx(2 / 3)
    assert sum(metrics.histograms[("kv_hit_rate", _labels(model="tiny"))][:-1]) == 1


# ---- several processes ---------------------------------------------------------------------------------


def test_last_value_gauges_merge_to_the_latest_and_counters_sum():
    labels = _labels(worker_id="w1", dp_rank="0", worker_type="decode")
    mine, other = Metrics(), Metrics()
    mine.set_latest("worker_last_time_to_first_token_seconds", labels, 0.5, at=10.0)
    other.set_latest("worker_last_time_to_first_token_seconds", labels, 0.2, at=11.0)
    other.set_latest("worker_last_time_to_first_token_seconds", labels, 0.9, at=9.0)  # older: ignored
    for recorder in (mine, other):
        recorder.inc("requests_started_total", _labels(model="tiny"))
    other_snapshot = msgspec.structs.replace(other.snapshot(), pid=os.getppid())  # a live process
    total = merge([mine.snapshot(), other_snapshot])
    assert total.latest[("worker_last_time_to_first_token_seconds", labels)] == (0.2, 11.0)
    assert total.counters[("requests_started_total", _labels(model="tiny"))] == 2
    gone = msgspec.structs.replace(other.snapshot(), pid=2**22 + 12345)  # no such process: its gauges go
    assert merge([gone]).latest == {} and merge([gone]).counters


def test_a_snapshot_file_without_last_values_still_decodes():
    old = msgspec.msgpack.encode([1, [["requests_total", [], 2.0]], [], []])
    assert msgspec.msgpack.decode(old, type=Snapshot).latest == []


def test_render_shows_active_requests_and_last_values():
    metrics = Metrics()
    metrics.add_gauge("inflight_requests", _labels(model="tiny"), 2)
    metrics.set_latest("worker_last_inter_token_latency_seconds", _labels(worker_id="w1"), 0.01, 1.0)
    text = render(metrics, "dynamo_frontend").decode()
    assert 'dynamo_frontend_active_requests{model="tiny"} 2' in text
    assert 'dynamo_frontend_inflight_requests{model="tiny"} 2' in text
    assert 'dynamo_frontend_worker_last_inter_token_latency_seconds{worker_id="w1"} 0.01' in text
    assert "# TYPE dynamo_frontend_worker_last_inter_token_latency_seconds gauge" in text


# ---- model gauges of /metrics --------------------------------------------------------------------------


def test_model_gauges_come_from_the_card_and_readiness_from_reachable_instances():
    card = SimpleNamespace(context_length=4096, runtime_config={"total_kv_blocks": 512, "max_num_seqs": 8,
                                                                "max_num_batched_tokens": True})
    model = SimpleNamespace(name="tiny", card=card, block_size=32, instance_ids=["a", "b"], prefill_ids=["p"])
    gateway = SimpleNamespace(engines=SimpleNamespace(unreachable={"a"}),
                              settings=SimpleNamespace(router=SimpleNamespace(migration_limit=3)))
    rows = {name: value for name, _, labels, value in info._model_gauges(gateway, model)}
    assert rows == {"model_workers": 2, "model_prefill_workers": 1, "model_ready": 1, "model_context_length": 4096,
                    "model_kv_cache_block_size": 32, "model_migration_limit": 3, "model_total_kv_blocks": 512,
                    "model_max_num_seqs": 8}
    gateway.engines.unreachable = {"a", "b"}
    assert dict((name, value) for name, _, _, value in info._model_gauges(gateway, model))["model_ready"] == 0
