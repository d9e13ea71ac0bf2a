"""Metric computations on hand-made timelines (times in ms, converted to ns)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.metrics import stats, summarize
from bench.records import RequestRecord, finalize_token_counts

MS = 1_000_000


def rec(start_ms: float, chunks_ms: list[float], *, osl: int | None = None, index: int = 0, session: int = 0,
        turn: int = 0, conversation: int | None = None, text: str = "", error: str | None = None,
        status: int = 200, isl: int = 0) -> RequestRecord:
    record = RequestRecord(index=index, session=session, turn=turn,
                           conversation=index if conversation is None else conversation,
                           start_ns=int(start_ms * MS), end_ns=int((chunks_ms[-1] if chunks_ms else start_ms) * MS),
                           chunk_ns=[int(t * MS) for t in chunks_ms], usage_completion_tokens=osl,
                           output_text=text, status=status, error_type=error,
                           error_message=None if error is None else f"{error} happened")
    record.output_tokens = osl
    record.input_tokens = isl
    return record


def test_stats_match_numpy_linear_percentiles_and_population_std():
    values = list(range(1, 101))
    result = stats(values, "ms")
    assert result.avg == 50.5 and result.min == 1 and result.max == 100
    assert result.p50 == 50.5
    assert result.p99 == pytest.approx(99.01)
    assert result.p1 == pytest.approx(1.99)
    assert result.p25 == pytest.approx(25.75)
    assert result.std == pytest.approx(np.std(values))  # population (ddof=0), as AIPerf
    assert result.count == 100 and result.sum == 5050


def test_streaming_latencies_of_one_request():
    # start 0; content chunks at 100, 130, 150, 190 ms; 7 output tokens (chunks carry several tokens)
    summary = summarize([rec(0, [100, 130, 150, 190], osl=7, isl=11)], streaming=True, produces_tokens=True, slos={})
    m = summary.metrics
    assert m["time_to_first_token"].avg == pytest.approx(100)
    assert m["time_to_second_token"].avg == pytest.approx(30)
    assert m["request_latency"].avg == pytest.approx(190)
    assert m["inter_token_latency"].avg == pytest.approx((190 - 100) / (7 - 1))  # (E2E - TTFT) / (OSL - 1)
    assert m["output_token_throughput_per_user"].avg == pytest.approx(1000 / 15)
    icl = m["inter_chunk_latency"]
    assert (icl.count, icl.min, icl.max) == (3, pytest.approx(20), pytest.approx(40))
    assert icl.avg == pytest.approx(30)
    assert m["output_sequence_length"].avg == 7 and m["input_sequence_length"].avg == 11


def test_run_level_throughputs_use_first_start_to_last_response():
    records = [rec(0, [50, 100], osl=10, index=0), rec(20, [80, 400], osl=30, index=1),
               rec(100, [150, 300], osl=20, index=2)]
    m = summarize(records, streaming=True, produces_tokens=True, slos={}).metrics
    assert m["benchmark_duration"].avg == pytest.approx(0.4)
    assert m["request_throughput"].avg == pytest.approx(3 / 0.4)
    assert m["output_token_throughput"].avg == pytest.approx(60 / 0.4)
    assert m["total_output_tokens"].avg == 60 and m["request_count"].avg == 3


def test_inter_chunk_latency_pools_gaps_across_requests():
    records = [rec(0, [10, 20, 40], osl=3, index=0), rec(0, [10, 110], osl=2, index=1)]
    icl = summarize(records, streaming=True, produces_tokens=True, slos={}).metrics["inter_chunk_latency"]
    assert icl.count == 3
    assert icl.avg == pytest.approx((10 + 20 + 100) / 3)
    assert icl.max == pytest.approx(100)


def test_single_token_requests_have_no_itl_or_ttst():
    m = summarize([rec(0, [25], osl=1)], streaming=True, produces_tokens=True, slos={}).metrics
    assert m["time_to_first_token"].avg == pytest.approx(25)
    assert "inter_token_latency" not in m and "time_to_second_token" not in m
    assert "output_token_throughput_per_user" not in m


def test_errors_are_counted_by_type_and_left_out_of_latencies():
    records = [rec(0, [10, 20], osl=2, index=0), rec(0, [], error="http_503", status=503, index=1),
               rec(0, [], error="http_503", status=503, index=2), rec(0, [5], error="stream_error", index=3),
               rec(0, [], error="cancelled", status=0, index=4)]
    summary = summarize(records, streaming=True, produces_tokens=True, slos={})
    assert summary.error_counts == {"http_503": 2, "stream_error": 1}
    assert summary.metrics["error_request_count"].avg == 3
    assert summary.metrics["request_count"].avg == 1
    assert summary.metrics["time_to_first_token"].count == 1
    assert summary.cancelled == 1
    top = summary.error_summary[0]
    assert top["count"] == 2 and top["error_details"] == {"code": 503, "type": "http_503",
                                                           "message": "http_503 happened"}


def test_goodput_counts_requests_meeting_every_slo():
    records = [rec(0, [100, 200], osl=11, index=0),     # TTFT 100, ITL 10
               rec(0, [300, 400], osl=11, index=1),     # TTFT 300 -> misses the TTFT SLO
               rec(0, [100, 400], osl=11, index=2)]     # ITL 30 -> misses the ITL SLO
    slos = {"time_to_first_token": 200.0, "inter_token_latency": 20.0}
    m = summarize(records, streaming=True, produces_tokens=True, slos=slos).metrics
    assert m["good_request_count"].avg == 1
    assert m["goodput"].avg == pytest.approx(1 / 0.4)


def test_goodput_on_a_larger_is_better_metric():
    records = [rec(0, [100, 200], osl=11, index=0), rec(0, [100, 400], osl=11, index=1)]  # 100 and 33 tok/s
    slos = {"output_token_throughput_per_user": 50.0}
    m = summarize(records, streaming=True, produces_tokens=True, slos=slos).metrics
    assert m["good_request_count"].avg == 1


def test_unary_requests_have_latency_but_no_streaming_metrics():
    m = summarize([rec(0, [250], osl=20)], streaming=False, produces_tokens=True, slos={}).metrics
    assert m["request_latency"].avg == pytest.approx(250)
    assert "time_to_first_token" not in m and "inter_token_latency" not in m
    assert m["output_token_throughput"].avg == pytest.approx(20 / 0.25)


def test_embeddings_have_no_token_output_metrics():
    m = summarize([rec(0, [8], isl=5)], streaming=False, produces_tokens=False, slos={}).metrics
    assert m["request_latency"].avg == pytest.approx(8)
    assert "output_token_throughput" not in m and "output_sequence_length" not in m
    assert m["request_throughput"].avg == pytest.approx(1 / 0.008)


def test_replay_send_lag_is_actual_minus_scheduled():
    record = rec(105, [150], osl=1)
    record.scheduled_ns = 100 * MS
    m = summarize([record], streaming=True, produces_tokens=True, slos={}).metrics
    assert m["replay_send_lag"].avg == pytest.approx(5)


def test_output_tokens_from_usage_else_from_the_tokenizer(tiny_tokenizer):
    with_usage = rec(0, [10, 20], osl=None, index=0, text="Hello world, this is a test.")
    with_usage.usage_completion_tokens = 42
    without = rec(0, [10, 20], osl=None, index=1, text="Hello world, this is a test.")
    finalize_token_counts([with_usage, without], {}, tiny_tokenizer.count)
    assert with_usage.output_tokens == 42
    assert without.output_tokens == tiny_tokenizer.count("Hello world, this is a test.") > 1


def test_multi_turn_input_length_includes_the_resent_history():
    turns = [rec(0, [10], osl=5, session=3, turn=0, conversation=7, index=0),
             rec(20, [30], osl=6, session=3, turn=1, conversation=7, index=1),
             rec(40, [50], osl=2, session=3, turn=2, conversation=7, index=2),
             rec(60, [70], osl=4, session=3, turn=0, conversation=8, index=3)]  # a second pass restarts
    new_inputs = {(3, 0): 100 + 10, (3, 1): 10, (3, 2): 10}  # 100-token system prompt + 10-token messages
    finalize_token_counts(turns, new_inputs, lambda text: 0)
    assert [r.input_tokens for r in turns] == [110, 110 + 5 + 10, 125 + 6 + 10, 110]
