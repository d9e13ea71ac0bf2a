"""/metrics is exact across HTTP worker processes: a scrape right after a request counts it, whichever
process served the request and whichever answers the scrape (no snapshot-interval lag)."""

from __future__ import annotations

import httpx

from e2e_support import MODEL


def _requests_total(base_url: str) -> float:
    with httpx.Client(base_url=base_url, timeout=30) as fresh:  # a new connection: any worker process answers
        text = fresh.get("/metrics").text
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("dynamo_frontend_requests_total{"))


def test_a_scrape_right_after_a_request_counts_it(start_daemon):
    server = start_daemon("--workers", "2")
    before = _requests_total(server.base_url)
    for round_ in range(1, 21):
        with httpx.Client(base_url=server.base_url, timeout=30) as fresh:  # either worker process serves it
            response = fresh.post("/v1/chat/completions", json={
                "model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "count me"}]})
        assert response.status_code == 200
        assert _requests_total(server.base_url) == before + round_, f"round {round_}"
