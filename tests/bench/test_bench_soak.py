"""``python -m bench soak``: the RSS bookkeeping on made-up samples, and a short run against a daemon it starts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from bench_support import REPO

from bench.soak import Run, Tally, baseline_index, process_rows, read_stat, total_row, verdict

DAEMON_PROCESSES = {"dyn-http": 2, "dyn-mocker": 3, "dyn-tokenizer": 1, "dyn-registry": 1, "dyn-indexer": 1}
REQUEST_KINDS = {"chat", "chat_stream", "completions", "embeddings", "invalid", "disconnect"}


def test_growth_is_measured_from_the_first_sample_after_the_warm_up_and_fails_over_the_limit():
    samples = [{"t_s": 0.0, "rss_kb": {1: 10_240, 2: 20_480, 3: 1_024}},
               {"t_s": 6.0, "rss_kb": {1: 51_200, 2: 20_480, 3: 1_024}},   # the baseline (warm-up 6 s)
               {"t_s": 12.0, "rss_kb": {1: 52_224, 2: 20_480, 4: 2_048}},  # 3 exited, 4 appeared
               {"t_s": 18.0, "rss_kb": {1: 174_080, 2: 20_480, 4: 4_096}}]
    base = baseline_index(samples, warmup_s=6.0)
    rows = {row["pid"]: row for row in process_rows({1: "dyn-http", 2: "daemon", 3: "dyn-mocker", 4: "dyn-mocker"},
                                                    samples, base, root=2)}
    assert base == 1
    assert rows[1]["first_mb"] == 10 and rows[1]["baseline_mb"] == 50 and rows[1]["max_mb"] == 170
    assert rows[1]["growth_mb"] == 120 and rows[2]["growth_mb"] == 0 and rows[2]["daemon"]
    assert rows[4]["baseline_mb"] == 2 and rows[4]["growth_mb"] == 2  # measured from when it appeared
    assert not rows[3]["alive_at_end"] and rows[4]["alive_at_end"]
    assert total_row(samples, base) == {"first_mb": 31.0, "baseline_mb": 71.0, "last_mb": 194.0, "max_mb": 194.0,
                                        "growth_mb": 123.0}

    tally = Tally(seed=0)
    tally.ok("chat", 0.01)
    failures = verdict(list(rows.values()), tally, Run(18.0, 6.0), limit_mb=100)
    assert len(failures) == 2 and "dyn-http [1]: RSS grew 120.0 MB" in failures[0] and "[3] exited" in failures[1]
    tally.error("chat", "http_5xx", "HTTP 500")
    assert verdict([rows[2]], tally, Run(18.0, 6.0), limit_mb=100) == ["1 unexpected errors: {'http_5xx': 1}"]


@pytest.mark.e2e
def test_a_short_soak_against_its_own_daemon_passes_and_reports_every_process(tmp_path):
    report_path = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "soak", "--minutes", "0.1", "--interval-s", "1", "--concurrency", "8",
         "--output", str(report_path)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS" in done.stdout and "dyn-indexer" in done.stdout

    report = json.loads(report_path.read_text())
    assert report["ok"] and report["failures"] == [] and report["config"]["started_daemon"]
    assert report["errors_total"] == 0 and set(report["errors"].values()) == {0}
    assert set(report["requests"]) == REQUEST_KINDS and all(count > 0 for count in report["requests"].values())
    assert report["in_flight_after"] == 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]

    names = Counter(row["name"] for row in report["processes"])
    assert all(names[name] == count for name, count in DAEMON_PROCESSES.items()), names
    daemon = [row for row in report["processes"] if row["daemon"]]
    assert len(daemon) == 1 and daemon[0]["pid"] == report["config"]["daemon_pid"]
    assert all(row["alive_at_end"] and row["samples"] == len(report["samples"]) for row in report["processes"])
    assert all(row["first_mb"] > 0 and row["max_mb"] >= row["last_mb"] for row in report["processes"])
    assert len(report["samples"]) >= 6 and report["samples"][-1]["t_s"] >= 6
    assert report["rss_total"]["last_mb"] == pytest.approx(sum(row["last_mb"] for row in report["processes"]),
                                                           abs=0.1)

    # everything it started is gone
    leftovers = [row["pid"] for row in report["processes"]
                 if (stat := read_stat(row["pid"])) is not None and stat.session == report["config"]["daemon_pid"]]
    assert leftovers == []
