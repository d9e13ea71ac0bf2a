"""GET endpoints: /v1/models, /v1/models/{model}, /health, /live."""

from __future__ import annotations

import openai
import pytest
from e2e_support import MODEL, error_of


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


def test_retrieve_model(daemon, client):
    listed = next(e for e in daemon.http.get("/v1/models").json()["data"] if e["id"] == MODEL)
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.created, model.owned_by) == (MODEL, "model", listed["created"], "dynamo")
    raw = daemon.http.get(f"/v1/models/{MODEL}")
    assert raw.status_code == 200 and raw.json() == listed
    missing = daemon.http.get("/v1/models/no-such-model")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "model_not_found" and "no-such-model" in error_of(missing)["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    assert daemon.http.post(f"/v1/models/{MODEL}", json={}).status_code == 405


def test_retrieve_a_model_whose_name_has_a_slash(start_daemon):
    server = start_daemon(mock_workers=0)
    server.start_mocker("--model-name", "org/tiny-x")
    server.wait_model("org/tiny-x")
    for path in ("/v1/models/org/tiny-x", "/v1/models/org%2Ftiny-x", "/v1/models/org%2ftiny%2Dx"):
        response = server.http.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["id"] == "org/tiny-x"
    with server.client() as sdk:
        assert sdk.models.retrieve("org/tiny-x").id == "org/tiny-x"  # the SDK sends org%2Ftiny-x
    assert server.http.get("/v1/models/org").status_code == 404
