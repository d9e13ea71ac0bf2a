"""GET endpoints: /v1/models, /health, /live."""

from __future__ import annotations

from e2e_support import MODEL


def test_models_list_contains_tiny(daemon, client):
    models = {m.id: m for m in client.models.list()}
    assert MODEL in models, models
    raw = daemon.http.get("/v1/models")
    assert raw.status_code == 200
    body = raw.json()
    assert body["object"] == "list"
    entry = next(e for e in body["data"] if e["id"] == MODEL)
    assert entry["object"] == "model"
    assert entry["context_length"] == 32768
    assert set(entry["model_types"]) == {"chat", "completions"}


def test_health_lists_both_mock_workers(daemon):
    response = daemon.http.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "healthy"
    tiny = [i for i in body["instances"] if i["model"] == MODEL]
    assert len(tiny) == 2, body
    assert len({i["instance_id"] for i in tiny}) == 2
    assert all(i["endpoint"].startswith("tcp://127.0.0.1:") for i in tiny), tiny
    assert f"dynamo.{MODEL}.generate" in body["endpoints"]


def test_live(daemon):
    response = daemon.http.get("/live")
    assert response.status_code == 200
    assert response.json()["status"] == "live"


def test_health_is_503_without_workers(start_daemon):
    empty = start_daemon(mock_workers=0)
    response = empty.http.get("/health")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["instances"] == []
    assert empty.http.get("/live").status_code == 200  # alive, just not able to serve
    assert empty.model_ids() == []
