"""``sweep`` and ``compare`` against the stub server (real profile runs with small counts)."""

from __future__ import annotations

import csv
import json

from bench.cli import main


def test_concurrency_sweep_writes_one_table_and_a_curve(stub_url, tmp_path):
    out = tmp_path / "sweep"
    code = main(["sweep", "--url", stub_url, "--model", "stub", "--streaming", "--concurrency", "1,3",
                 "--request-count", "6", "--isl", "16", "--osl", "4", "--artifact-dir", str(out), "--no-progress",
                 "--no-plots"])
    assert code == 0
    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert [row["concurrency"] for row in rows] == ["1", "3"]
    assert all(float(row["output_token_throughput.avg"]) > 0 for row in rows)
    assert float(rows[1]["request_throughput.avg"]) > float(rows[0]["request_throughput.avg"])
    assert json.loads((out / "sweep.json").read_text())["load"] == "concurrency"
    assert (out / "sweep_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "concurrency_3" / "profile_export.json").is_file()


def test_compare_reads_our_exports_and_aiperf_exports(stub_url, tmp_path):
    ours = tmp_path / "ours"
    assert main(["profile", "--url", stub_url, "--model", "stub", "--streaming", "--concurrency", "2",
                 "--request-count", "4", "--isl", "8", "--osl", "3", "--artifact-dir", str(ours),
                 "--no-progress", "--no-plots"]) == 0
    aiperf = tmp_path / "aiperf"
    aiperf.mkdir()
    (aiperf / "profile_export_aiperf.json").write_text(json.dumps({
        "schema_version": "1.4", "time_to_first_token": {"unit": "ms", "avg": 10.0, "p50": 9.0},
        "request_throughput": {"unit": "requests/sec", "avg": 100.0}}))
    out = tmp_path / "cmp"
    assert main(["compare", str(aiperf), str(ours), "--labels", "aiperf,ours", "--output", str(out)]) == 0
    rows = {row["metric"]: row for row in csv.DictReader((out / "compare.csv").read_text().splitlines())}
    ttft = rows["time_to_first_token avg (ms)"]
    assert float(ttft["aiperf"]) == 10.0 and float(ttft["ours"]) > 19  # the stub's TTFT is 20 ms
    assert ttft["ours vs aiperf"].endswith("%")
    assert (out / "compare.png").stat().st_size > 1000
