"""The mock's embeddings, images and videos (frontend/engines/mocker/embeddings.py, media.py, modalities.py)."""

from __future__ import annotations

import asyncio
import io
import math
from array import array

import pytest
from PIL import Image

from frontend.engines.mocker.embeddings import embed_tokens
from frontend.engines.mocker.media import Scene, encode_image, encode_video, video_format
from frontend.engines.mocker.modalities import MockWorker, parse_model_types
from frontend.protocol.engine import EmbedRequest, ImageRequest, MediaProgress, VideoRequest
from frontend.worker import InvalidInput, ProgressSink


def _floats(data: bytes) -> list[float]:
    return list(array("f", data))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_embeddings_are_deterministic_unit_vectors():
    vector = _floats(embed_tokens([5, 9, 12], 64))
    assert len(vector) == 64
    assert math.sqrt(sum(v * v for v in vector)) == pytest.approx(1.0, abs=1e-5)
    assert _floats(embed_tokens([5, 9, 12], 64)) == vector
    assert _floats(embed_tokens([], 8)) == [1.0] + [0.0] * 7


def test_shared_tokens_point_the_same_way_and_order_matters():
    base = _floats(embed_tokens([1, 2, 3, 4], 128))
    overlapping = _floats(embed_tokens([1, 2, 3, 5], 128))
    unrelated = _floats(embed_tokens([90, 91, 92, 93], 128))
    assert _cos(base, overlapping) > _cos(base, unrelated) + 0.3
    assert _floats(embed_tokens([4, 3, 2, 1], 128)) != base


def test_scenes_depend_on_prompt_negative_prompt_and_seed():
    image = Scene.of("a kite", None, 1).render(32, 24)
    assert image.tobytes() == Scene.of("a kite", None, 1).render(32, 24).tobytes()
    for other in (Scene.of("a kite", None, 2), Scene.of("a boat", None, 1), Scene.of("a kite", "rain", 1)):
        assert other.render(32, 24).tobytes() != image.tobytes()
    assert Scene.of("a kite", None, 1).render(32, 24, step=5).tobytes() != image.tobytes()


@pytest.mark.parametrize("file_format, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_images_encode(file_format, pil_format):
    data = encode_image(Scene.of("x", None, 0).render(20, 10), file_format, 50)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == pil_format and decoded.size == (20, 10)


@pytest.mark.parametrize("file_format, pil_format", [("webp", "WEBP"), ("gif", "GIF")])
def test_animated_videos_encode(file_format, pil_format):
    scene = Scene.of("x", None, 0)
    data = encode_video([scene.render(20, 10, i) for i in range(4)], 8, file_format)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == pil_format and decoded.n_frames == 4


def test_video_format_hints():
    assert video_format("gif") == "gif" and video_format("webp") == "webp"
    assert video_format("") in ("mp4", "webp") and video_format("mp4") == video_format("")


def test_parse_model_types():
    assert parse_model_types("chat, completions") == ["chat", "completions"]
    for bad in ("", "chat,audio", ","):
        with pytest.raises(ValueError):
            parse_model_types(bad)


class Collector:
    """Captures what a ProgressSink sends."""

    def __init__(self) -> None:
        self.messages: list[MediaProgress] = []

    def sink(self, request_id: str, wants_frames: bool) -> ProgressSink:
        return ProgressSink(request_id, wants_frames, self.messages.append, asyncio.get_running_loop())


def _worker(types: list[str], speedup: float = 1e6) -> MockWorker:
    return MockWorker(text=None, model_types=types, speedup_ratio=speedup, embedding_dim=16)  # type: ignore[arg-type]


def test_worker_serves_its_types_only():
    worker = _worker(["embedding"])
    assert worker.serves("embedding") and not worker.serves("images") and not worker.serves("chat")


def test_worker_embeds_and_draws_with_progress():
    async def run() -> None:
        worker, collector = _worker(["embedding", "images"]), Collector()
        vectors = await worker.embed(EmbedRequest("e", [[1, 2], [3]]))
        assert [len(v) for v in vectors] == [64, 64]
        items = await worker.generate_images(ImageRequest("i", "a kite", n=2, width=16, height=8,
                                                          num_inference_steps=4), collector.sink("i", False))
        assert [item.format for item in items] == ["png", "png"] and items[0].data != items[1].data
        await asyncio.sleep(0)
        assert [m.percent for m in collector.messages] == [22, 45, 67, 90, 100]

    asyncio.run(run())


def test_worker_refuses_what_the_mock_cannot_make():
    async def run() -> None:
        worker, collector = _worker(["videos"]), Collector()
        for request in (VideoRequest("v", "x", num_frames=601), VideoRequest("v", "x", output_format="avi"),
                        VideoRequest("v", "x", width=4000, height=10)):
            with pytest.raises(InvalidInput):
                await worker.generate_video(request, collector.sink("v", False))

    asyncio.run(run())


def test_streamed_video_stops_between_frames_when_cancelled():
    async def run() -> None:
        worker, collector = _worker(["videos"], speedup=1.0), Collector()
        request = VideoRequest("v", "x", width=16, height=8, fps=50, num_frames=500, num_inference_steps=1,
                               stream_frames=True)
        task = asyncio.ensure_future(worker.generate_video(request, collector.sink("v", True)))
        while not any(m.frame for m in collector.messages):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        sent = sum(1 for m in collector.messages if m.frame)
        await asyncio.sleep(0.2)
        assert sum(1 for m in collector.messages if m.frame) == sent < 500

    asyncio.run(run())
