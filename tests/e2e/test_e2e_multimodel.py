"""Several models at once on the shared daemon: every type listed in /v1/models, a second chat model with its
own tokenizer, template, context length and block size served next to ``tiny``, a model's life following
its workers, and conflicting registrations refused by the registry's model-card checksum."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest
from e2e_support import EXTRA_MODELS, MODEL, wait_until
from model_dirs import MARKERS, make_wordy_model

WORDY = "wordy"
REFUSED_EXIT = 3  # the mocker's exit code when the registry refuses it


@pytest.fixture(scope="module")
def wordy(daemon, tmp_path_factory) -> Path:
    """A second chat model from a word-level tokenizer dir, KV block size 32, served by one worker."""
    directory = make_wordy_model(tmp_path_factory.mktemp("models") / WORDY)
    daemon.start_mocker("--model-path", str(directory), "--model-name", WORDY, "--kv-block-size", "32")
    daemon.wait_model(WORDY)
    return directory


def test_models_lists_every_model_with_its_types(daemon, client):
    listed = {model.id: model for model in client.models.list()}
    expected = {MODEL: ["chat", "completions"], **{name: [kind] for kind, name in EXTRA_MODELS.items()}}
    for name, types in expected.items():
        entry = listed[name]
        assert entry.object == "model" and entry.owned_by == "dynamo" and entry.created > 0
        assert entry.model_types == types and entry.context_length == 32768


def test_second_model_has_its_own_tokenizer_and_limits(daemon, client, wordy, tok):
    entry = next(m for m in daemon.http.get("/v1/models").json()["data"] if m["id"] == WORDY)
    assert entry["context_length"] == 4096 and entry["model_types"] == ["chat", "completions"]
    text = "The river ran past the old mill"
    tiny_ids = daemon.http.post("/tokenize", json={"model": MODEL, "prompt": text}).json()["tokens"]
    wordy_ids = daemon.http.post("/tokenize", json={"model": WORDY, "prompt": text}).json()["tokens"]
    assert tiny_ids == tok.encode(text).ids
    assert wordy_ids != tiny_ids and len(wordy_ids) == len(text.split()) + 1  # <bos> + one id per word


def test_requests_route_by_model(client, wordy):
    messages = [{"role": "user", "content": "Tell me about the river"}]
    wordy_answer = client.chat.completions.create(model=WORDY, messages=messages, max_tokens=8)
    tiny_answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    assert wordy_answer.model == WORDY and tiny_answer.model == MODEL
    assert wordy_answer.choices[0].message.content and tiny_answer.choices[0].message.content
    # each prompt was rendered with its own model's template: wordy's is "<|user|> ... <|assistant|>"
    assert wordy_answer.usage.prompt_tokens == len("Tell me about the river".split()) + 2
    assert tiny_answer.usage.prompt_tokens != wordy_answer.usage.prompt_tokens


def test_a_model_lives_from_its_first_to_its_last_worker(daemon, tmp_path):
    directory = make_wordy_model(tmp_path / "ephemeral")
    first = daemon.start_mocker("--model-path", str(directory), "--model-name", "ephemeral")
    daemon.wait_model("ephemeral")
    second = daemon.start_mocker("--model-path", str(directory), "--model-name", "ephemeral")
    daemon.wait_model("ephemeral", instances=2)
    first.stop()
    wait_until(lambda: sum(i["model"] == "ephemeral" for i in daemon.http.get("/health").json()["instances"]) == 1,
               10, "one instance left")
    assert "ephemeral" in daemon.model_ids()
    second.stop()
    daemon.wait_model("ephemeral", present=False)


def _refused(daemon, *args: str) -> str:
    """Start a mocker that the registry must refuse; returns its log."""
    mocker = daemon.start_mocker(*args)
    assert mocker.process.wait(30) == REFUSED_EXIT, mocker.describe()
    return mocker.log_text()


def test_same_name_with_another_tokenizer_is_refused(daemon, wordy, tmp_path):
    saved = tmp_path / "tokenizer.json"
    shutil.copy(wordy / "tokenizer.json", saved)
    tokenizer = json.loads(saved.read_text())
    tokenizer["model"]["vocab"]["zebra-crossing"] = len(tokenizer["model"]["vocab"]) + len(MARKERS) + 10
    try:
        (wordy / "tokenizer.json").write_text(json.dumps(tokenizer))
        log = _refused(daemon, "--model-path", str(wordy), "--model-name", WORDY, "--kv-block-size", "32")
    finally:
        shutil.copy(saved, wordy / "tokenizer.json")
    assert "already served with a different model card (tokenizer/chat template checksum differ" in log, log


def test_same_name_with_another_chat_template_is_refused(daemon, wordy, tmp_path):
    config_path = wordy / "tokenizer_config.json"
    saved = config_path.read_text()
    config = json.loads(saved)
    config["chat_template"] = "{% for m in messages %}{{ m.content }}{% endfor %}"
    try:
        config_path.write_text(json.dumps(config))
        log = _refused(daemon, "--model-path", str(wordy), "--model-name", WORDY, "--kv-block-size", "32")
    finally:
        config_path.write_text(saved)
    assert "tokenizer/chat template checksum differ" in log, log


def test_same_name_with_another_block_size_is_refused(daemon, wordy):
    log = _refused(daemon, "--model-path", str(wordy), "--model-name", WORDY, "--kv-block-size", "64")
    assert "(KV block size differ from instance" in log, log
    assert [i["model"] for i in daemon.http.get("/health").json()["instances"]].count(WORDY) == 1


def test_one_worker_serves_several_types(daemon, client):
    daemon.start_mocker("--model-name", "combo", "--model-types", "chat,embedding,images")
    daemon.wait_model("combo")
    entry = next(m for m in client.models.list() if m.id == "combo")
    assert entry.model_types == ["chat", "embedding", "images"]
    chat = client.chat.completions.create(model="combo", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert chat.choices[0].message.content
    assert len(client.embeddings.create(model="combo", input="Hi").data[0].embedding) == 384
    assert client.images.generate(model="combo", prompt="Hi", size="16x16", response_format="b64_json").data
    with pytest.raises(openai.BadRequestError, match="does not serve completions"):
        client.completions.create(model="combo", prompt="Hi", max_tokens=4)
