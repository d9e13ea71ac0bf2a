"""Unary requests in the worker SDK (frontend/worker/unary.py, runtime.py) and the model-files checksum."""

from __future__ import annotations

import asyncio
import json
import shutil
from array import array

import pytest

from frontend.protocol.engine import (EmbedRequest, EmbedResult, ImageRequest, MediaItem, MediaProgress,
                                      MediaResult, UnaryError, VideoRequest)
from frontend.protocol.registry import ModelCard
from frontend.worker import Engine, InvalidInput, RegistrationError, WorkerRuntime
from frontend.worker.checksum import model_checksum
from frontend.worker.unary import UnaryServer, pack_vector

TINY = "config/models/tiny"


class Embedder(Engine):
    async def embed(self, request):
        if request.inputs == [[0]]:
            raise InvalidInput("token 0 is not allowed here")
        if request.inputs == [[1]]:
            raise RuntimeError("boom")
        return [[float(len(ids))] * 2 for ids in request.inputs]


class Painter(Engine):
    async def generate_images(self, request, progress):
        progress.report(0.5)
        await asyncio.sleep(10)  # until aborted
        return []

    async def generate_video(self, request, progress):
        progress.frame(b"jpeg-1")
        progress.report(1.0)
        return [MediaItem(b"video", "gif", fps=4)]


def _serve(engine: Engine, *requests, abort: str | None = None) -> list:
    """Run requests through a UnaryServer; returns every message sent to the gateway."""
    sent: list = []

    async def run() -> None:
        server = UnaryServer(engine, asyncio.get_running_loop(), lambda identity, message: sent.append(message))
        for request in requests:
            server.start(b"gw", request)
        await asyncio.sleep(0.05)
        if abort is not None:
            server.abort(abort)
        while server.tasks:
            await asyncio.sleep(0.01)

    asyncio.run(run())
    return sent


def test_embed_result_packs_float32():
    [result] = _serve(Embedder(), EmbedRequest("r1", [[5, 6, 7], [8]]))
    assert isinstance(result, EmbedResult) and result.request_id == "r1"
    assert [list(array("f", v)) for v in result.vectors] == [[3.0, 3.0], [1.0, 1.0]]


def test_errors_become_unary_errors():
    invalid, crashed = _serve(Embedder(), EmbedRequest("bad", [[0]]), EmbedRequest("bug", [[1]]))
    assert invalid == UnaryError("bad", "token 0 is not allowed here", invalid=True)
    assert crashed.request_id == "bug" and not crashed.invalid and "boom" in crashed.message


def test_a_missing_method_says_what_the_worker_does_not_serve():
    [error] = _serve(Embedder(), ImageRequest("img", "a kite"))
    assert error == UnaryError("img", "this worker does not serve image generation")
    [error] = _serve(Painter(), EmbedRequest("e", [[1]]))
    assert error.message == "this worker does not serve embeddings"


def test_progress_frames_and_result():
    progress_only = _serve(Painter(), VideoRequest("v1", "x"))
    assert progress_only == [MediaProgress("v1", 100), MediaResult("v1", [MediaItem(b"video", "gif", fps=4)])]
    streamed = _serve(Painter(), VideoRequest("v2", "x", stream_frames=True))
    assert streamed[0] == MediaProgress("v2", 0, b"jpeg-1")


def test_abort_cancels_without_a_reply():
    assert _serve(Painter(), ImageRequest("slow", "x"), abort="slow") == [MediaProgress("slow", 50)]


def test_serves_follows_the_overridden_methods():
    assert Embedder().serves("embedding") and not Embedder().serves("chat") and not Embedder().serves("images")
    assert Painter().serves("images") and Painter().serves("videos") and not Painter().serves("unknown")


def test_registration_refuses_a_card_the_engine_cannot_serve():
    async def run() -> None:
        runtime = WorkerRuntime(Embedder(), registry_endpoint="tcp://127.0.0.1:1")
        try:
            with pytest.raises(RegistrationError, match="does not serve model type.*chat"):
                await runtime.register_model(ModelCard("m", TINY, model_types=["embedding", "chat"]))
        finally:
            await runtime.close()

    asyncio.run(run())


def test_pack_vector_takes_bytes_as_they_are():
    assert pack_vector(b"\x00\x00\x80\x3f") == array("f", [1.0]).tobytes() == pack_vector([1.0])


def test_checksum_follows_tokenizer_and_templates(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    original = model_checksum(str(model))
    assert original == model_checksum(TINY)  # the same files anywhere give the same checksum
    config_path = model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = 1  # not the tokenizer, not a template
    config_path.write_text(json.dumps(config))
    assert model_checksum(str(model)) == original
    (model / "chat_template.jinja").write_text("{{ messages }}")
    with_template = model_checksum(str(model))
    assert with_template != original
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    tokenizer["added_tokens"][0]["content"] = "<|changed|>"
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert model_checksum(str(model)) not in (original, with_template)
    assert model_checksum(str(tmp_path / "missing")) == model_checksum(str(tmp_path / "also-missing"))


def test_card_differences_name_the_fields():
    card = ModelCard("m", "/p", checksum="a")
    assert card.differences(card) == []
    other = ModelCard("m", "/p", kv_block_size=32, checksum="b")
    assert card.differences(other) == ["KV block size", "tokenizer/chat template checksum"]
