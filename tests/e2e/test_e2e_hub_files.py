"""Model files from the Hugging Face hub cache: a worker whose card names a repository id (not a directory on the
frontend's machine) is served with the config and tokenizer files from the frontend's own hub cache, offline; a
model whose files are nowhere is left out with an error naming it, and the other models keep being served."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from e2e_support import MODEL, TINY_DIR, wait_until

from frontend.tokenizer.hub_files import MODEL_FILE_PATTERNS, is_repo_id

REPO_ID = "testorg/tiny-remote"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def build_hub_cache(root: Path, repo_id: str, source: Path, *, weights: bool = False) -> Path:
    """A hub cache (HF_HOME) holding ``repo_id`` at one commit, in huggingface_hub's layout."""
    repo_dir = root / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    for file in source.iterdir():
        shutil.copy(file, snapshot / file.name)
    if weights:  # a weights file in the cache: never needed by the frontend
        (snapshot / "model.safetensors").write_bytes(b"\0" * 16)
    return root


@pytest.mark.parametrize("text, expected", [("testorg/tiny-remote", True), ("tiny", True), ("/models/tiny", False),
                                            ("../tiny", False), ("a/b/c", False), ("", False)])
def test_repository_ids(text, expected):
    assert is_repo_id(text) is expected


def test_only_small_files_are_fetched():
    assert "tokenizer.json" in MODEL_FILE_PATTERNS and not any("safetensors" in p or "bin" in p
                                                                for p in MODEL_FILE_PATTERNS)


def test_a_remote_model_is_served_from_the_frontends_hub_cache(start_daemon, tmp_path):
    frontend_cache = build_hub_cache(tmp_path / "frontend-hf", REPO_ID, TINY_DIR)
    worker_cache = build_hub_cache(tmp_path / "worker-hf", REPO_ID, TINY_DIR, weights=True)
    server = start_daemon(mock_workers=1, env={"HF_HOME": str(frontend_cache), "HF_HUB_OFFLINE": "1"})
    # the worker has its own machine's cache (with the weights); the frontend reads only its own
    server.start_mocker("--model-path", REPO_ID, env={"HF_HOME": str(worker_cache), "HF_HUB_OFFLINE": "1"})
    server.wait_model(REPO_ID)
    with server.client() as client:
        reply = client.chat.completions.create(model=REPO_ID, max_tokens=4,
                                               messages=[{"role": "user", "content": "hello"}])
        assert reply.model == REPO_ID and reply.usage.completion_tokens == 4
        assert reply.usage.prompt_tokens > 3  # templated and tokenized here, with the cached tokenizer
        tokens = server.http.post("/tokenize", json={"model": REPO_ID, "prompt": "hello world"}).json()
        local = server.http.post("/tokenize", json={"model": MODEL, "prompt": "hello world"}).json()
        assert tokens["tokens"] == local["tokens"]  # the same files as the bundled model's


def test_a_model_whose_files_are_nowhere_is_left_out_with_an_error(start_daemon, tmp_path):
    empty_cache = tmp_path / "empty-hf"
    empty_cache.mkdir()
    worker_cache = build_hub_cache(tmp_path / "worker-hf", REPO_ID, TINY_DIR)
    server = start_daemon(mock_workers=1, env={"HF_HOME": str(empty_cache), "HF_HUB_OFFLINE": "1"})
    server.start_mocker("--model-path", REPO_ID, env={"HF_HOME": str(worker_cache), "HF_HUB_OFFLINE": "1"})
    wait_until(lambda: any(i["model"] == REPO_ID for i in server.http.get("/health").json()["instances"]), 20,
               "the worker to register")
    wait_until(lambda: f"model {REPO_ID!r}" in server.log_text(), 20, "the error naming the model",
               on_timeout=server.describe)
    assert "hub" in server.log_text()
    assert REPO_ID not in server.model_ids() and MODEL in server.model_ids()
    with server.client() as client:  # the other models are served as before
        assert client.chat.completions.create(model=MODEL, max_tokens=2,
                                              messages=[{"role": "user", "content": "hi"}]).choices
