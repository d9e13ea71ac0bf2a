"""End to end: the real frontend daemon with two mock workers, loaded by ``python -m bench profile``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from bench_support import REPO, free_port, stop, wait_for

pytestmark = pytest.mark.e2e
STAT_FIELDS = ["unit", "avg", "p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "min", "max", "std",
               "count", "sum"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def frontend_url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("daemon") / "daemon.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
         "--registry-endpoint", f"tcp://127.0.0.1:{free_port()}", "--workers", "1", "--mock-workers", "2",
         # tokens about 1 ms apart: with no delay a stream's chunks can arrive in one read, every ITL is 0 and
         # output_token_throughput_per_user (1 / ITL) has no value
         "--mock-speedup-ratio", "5", "--mock-extra-models", "none"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for(f"http://127.0.0.1:{port}/v1/models", process, timeout=60, needle='"tiny"')
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


def test_profile_against_the_frontend_writes_json_csv_jsonl_and_plots(frontend_url, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "profile", "--url", frontend_url, "--model", "tiny", "--endpoint-type", "chat",
         "--streaming", "--concurrency", "4", "--request-count", "16", "--warmup-request-count", "2", "--isl", "48",
         "--osl", "8", "--tokenizer", "config/models/tiny", "--workers", "2", "--random-seed", "1",
         "--goodput", "time_to_first_token:60000", "--artifact-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Time to First Token" in done.stdout

    export = json.loads((out / "profile_export.json").read_text())
    for tag in ("time_to_first_token", "time_to_second_token", "inter_token_latency", "inter_chunk_latency",
                "request_latency", "output_token_throughput_per_user", "output_sequence_length",
                "input_sequence_length"):
        assert list(export[tag]) == STAT_FIELDS, tag
    assert export["time_to_first_token"]["unit"] == "ms" and export["time_to_first_token"]["count"] == 16
    assert export["request_count"] == {"unit": "requests", "avg": 16.0}
    assert export["error_request_count"]["avg"] == 0 and export["error_summary"] == []
    assert export["output_sequence_length"]["min"] == export["output_sequence_length"]["max"] == 8  # ignore_eos
    assert export["input_sequence_length"]["avg"] == 48
    assert export["output_token_throughput"]["avg"] > 0 and export["request_throughput"]["avg"] > 0
    assert export["goodput"]["avg"] == pytest.approx(export["request_throughput"]["avg"])
    assert export["client"]["processes"] == 2

    rows = list(csv.DictReader((out / "profile_export.csv").read_text().splitlines()))
    assert len(rows) == 16 and {row["worker"] for row in rows} == {"0", "1"}
    assert all(row["status"] == "200" and row["output_sequence_length"] == "8" for row in rows)
    assert all(0 < float(row["time_to_first_token"]) <= float(row["request_latency"]) for row in rows)
    lines = [json.loads(line) for line in (out / "profile_export.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and all(line["error"] is None for line in lines)
    assert lines[0]["metrics"]["time_to_first_token"]["unit"] == "ms"
    assert lines[0]["metadata"]["usage_completion_tokens"] == 8

    for name in ("ttft_distribution", "itl_distribution", "throughput_over_time", "latency_over_time"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
