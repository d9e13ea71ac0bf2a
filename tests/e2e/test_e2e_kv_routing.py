"""KV-aware routing end to end: real daemon, real mock workers with paged KV caches and KV events."""

from __future__ import annotations

import subprocess
import sys

import httpx

from e2e_support import REPO, wait_until

SESSIONS = 5
TURNS = 4


def _system_prompt(index: int) -> str:
    words = "river lamp harbor circuit garden signal orbit engine ledger meadow".split()
    return f"Session {index}. " + " ".join(words[(index * 7 + i) % len(words)] + str(i % 13) for i in range(400))


def _chat(server, system: str, turn: int) -> dict:
    response = server.http.post("/v1/chat/completions", json={
        "model": "tiny", "max_tokens": 4, "ignore_eos": True,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"turn {turn}"}]})
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def test_requests_sharing_a_prefix_land_on_the_worker_that_holds_it(start_daemon):
    server = start_daemon("--router-mode", "kv", mock_workers=4)
    systems = [_system_prompt(i) for i in range(SESSIONS)]
    hits = []
    for turn in range(TURNS):
        for system in systems:  # interleaved: a round-robin router would scatter each session
            usage = _chat(server, system, turn)
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            if turn:
                hits.append(cached / usage["prompt_tokens"])
    assert min(hits) > 0.9, hits
    assert server.http.get("/health").json()["router_mode"] == "kv"

    def holders() -> int:
        workers = server.http.get("/health").json()["kv_index"]["workers"].values()
        return sum(1 for worker in workers if worker.get("blocks_mapped", 0))

    wait_until(lambda: holders() >= 2, 5, "the sessions to be spread over several workers")


def test_round_robin_does_not_follow_prefixes(start_daemon):
    """The control for the test above: the same workload without KV routing misses the cache often."""
    server = start_daemon("--router-mode", "round_robin", mock_workers=4)
    systems = [_system_prompt(i) for i in range(SESSIONS)]
    misses = 0
    for turn in range(TURNS):
        for system in systems:
            usage = _chat(server, system, turn)
            if turn and not (usage.get("prompt_tokens_details") or {}).get("cached_tokens"):
                misses += 1
    assert misses > 0


def test_a_killed_worker_loses_its_blocks(start_daemon):
    server = start_daemon("--router-mode", "kv", mock_workers=0)
    victim = server.start_mocker("--model-name", "tiny")
    server.wait_model("tiny")
    for index in range(3):
        _chat(server, _system_prompt(index), 0)

    def indexed() -> dict:
        return server.http.get("/health").json()["kv_index"]

    wait_until(lambda: indexed()["live_blocks"] > 50, 10, "the worker's KV events to be indexed")
    survivor = server.start_mocker("--model-name", "tiny")
    server.wait_model("tiny", instances=2)
    victim.kill()
    wait_until(lambda: indexed()["live_blocks"] == 0 and len(indexed()["workers"]) == 1, 15,
               "the killed worker's blocks to be removed", on_timeout=server.describe)
    assert survivor.alive()


def test_block_size_mismatch_is_reported_in_health(start_daemon):
    server = start_daemon("--router-mode", "kv", mock_workers=0)
    worker = subprocess.Popen([sys.executable, "tests/apps/mismatched_worker.py", server.registry_endpoint, "odd"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def warned() -> bool:
            health = server.http.get("/health")
            return health.status_code == 200 and any("block size 32" in w for w in health.json()["warnings"])

        wait_until(warned, 15, "the block-size warning in /health", on_timeout=server.describe)
        metrics = httpx.get(server.base_url + "/metrics").text
        assert any(line.startswith("dynamo_frontend_kv_block_size_mismatch") and line.endswith(" 1")
                   for line in metrics.splitlines())
    finally:
        worker.terminate()
        worker.wait(10)
