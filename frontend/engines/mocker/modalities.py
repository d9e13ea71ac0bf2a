"""The mock worker's engine for every model type: text generation from :class:`MockEngine`, plus mock
embeddings (``embeddings.py``) and images and videos (``media.py``), with simulated time divided by the
speedup ratio like the text engine's.

Timing: embeddings take ``EMBED_S_PER_TOKEN`` per input token; images and videos take
``num_inference_steps`` (default ``DEFAULT_STEPS``) denoising steps of ``IMAGE_STEP_S`` per image or
``VIDEO_STEP_S`` per video, reporting progress after each; then the files are drawn and encoded in a thread.
A streamed video sends each frame as it is drawn, one frame time (1/fps) apart.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Sequence

from ...protocol.engine import EmbedRequest, GenerateRequest, ImageRequest, MediaItem, VideoRequest
from ...protocol.registry import MODEL_TYPES
from ...worker import Engine, InvalidInput, ProgressSink, TokenSink
from ...worker.status_server import MetricRow
from .embeddings import embed_tokens
from .engine import MockEngine
from .media import VIDEO_FORMATS, Scene, encode_image, encode_video, label, video_format

EMBED_S_PER_TOKEN = 0.00005
IMAGE_STEP_S = 0.01
VIDEO_STEP_S = 0.02
DEFAULT_STEPS = 20
IMAGE_SIZE = (1024, 1024)
VIDEO_SIZE = (832, 480)  # Dynamo's default video size
VIDEO_FPS = 24
VIDEO_SECONDS = 2.0
MAX_IMAGE_SIDE = 2048
MAX_VIDEO_SIDE = 1280
MAX_FRAMES = 600


def parse_model_types(text: str) -> list[str]:
    """``chat,completions`` -> ["chat", "completions"]; unknown types are an error."""
    types = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in types if kind not in MODEL_TYPES]
    if not types or unknown:
        raise ValueError(f"model types must be some of {', '.join(MODEL_TYPES)} (got {text!r})")
    return types


class MockWorker(Engine):
    """Serves the card's model types: text through the step-based mock engine, the others here."""

    def __init__(self, text: MockEngine, model_types: list[str], speedup_ratio: float, embedding_dim: int) -> None:
        self.text = text
        self.model_types = model_types
        self.speedup_ratio = speedup_ratio
        self.embedding_dim = embedding_dim

    def serves(self, model_type: str) -> bool:
        return model_type in self.model_types

    def add_request(self, request: GenerateRequest, sink: TokenSink) -> None:
        self.text.add_request(request, sink)

    def abort_request(self, request_id: str) -> None:
        self.text.abort_request(request_id)

    def worker_metrics(self, labels: tuple[tuple[str, str], ...]) -> list[MetricRow]:
        return self.text.prompt_tokens.rows(labels)

    async def embed(self, request: EmbedRequest) -> Sequence[bytes]:
        await self._sleep(EMBED_S_PER_TOKEN * sum(len(ids) for ids in request.inputs))
        return [embed_tokens(ids, self.embedding_dim) for ids in request.inputs]

    async def generate_images(self, request: ImageRequest, progress: ProgressSink) -> Sequence[MediaItem]:
        width, height = _size(request.width, request.height, IMAGE_SIZE, MAX_IMAGE_SIDE)
        seed = _seed(request.seed)
        await self._denoise(request.num_inference_steps, IMAGE_STEP_S * request.n, progress)
        items = await asyncio.to_thread(_images, request, width, height, seed)
        progress.report(1.0)
        return items

    async def generate_video(self, request: VideoRequest, progress: ProgressSink) -> Sequence[MediaItem]:
        width, height = _size(request.width, request.height, VIDEO_SIZE, MAX_VIDEO_SIDE)
        fps = request.fps or VIDEO_FPS
        frames = request.num_frames or max(1, round((request.seconds or VIDEO_SECONDS) * fps))
        if frames > MAX_FRAMES:
            raise InvalidInput(f"the mock makes at most {MAX_FRAMES} frames per video (asked: {frames})")
        file_format = video_format(request.output_format)
        if file_format not in VIDEO_FORMATS:
            raise InvalidInput(f"the mock makes {', '.join(VIDEO_FORMATS)} videos, not {file_format!r}")
        scene = Scene.of(request.prompt, request.negative_prompt, _seed(request.seed))
        await self._denoise(request.num_inference_steps, VIDEO_STEP_S, progress)
        if progress.wants_frames:
            await self._stream_frames(scene, width, height, frames, 1 / fps / self.speedup_ratio, progress)
            return []
        data = await asyncio.to_thread(
            lambda: encode_video([scene.render(width, height, i) for i in range(frames)], fps, file_format))
        progress.report(1.0)
        return [MediaItem(data, file_format, fps=fps)]

    async def _denoise(self, steps: int | None, step_s: float, progress: ProgressSink) -> None:
        """The simulated diffusion steps: 90 % of the progress."""
        steps = steps or DEFAULT_STEPS
        for step in range(steps):
            await self._sleep(step_s)
            progress.report(0.9 * (step + 1) / steps)

    async def _stream_frames(self, scene: Scene, width: int, height: int, frames: int, frame_s: float,
                             progress: ProgressSink) -> None:
        """Draw, encode and send frames one by one in a thread; an abort stops it between frames."""
        stop = threading.Event()

        def run() -> None:
            for index in range(frames):
                if stop.is_set():
                    return
                progress.frame(encode_image(scene.render(width, height, index), "jpeg", 85))
                time.sleep(frame_s)

        try:
            await asyncio.to_thread(run)
        except asyncio.CancelledError:
            stop.set()
            raise

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speedup_ratio)


def _size(width: int, height: int, default: tuple[int, int], limit: int) -> tuple[int, int]:
    width, height = (width, height) if width and height else default
    if max(width, height) > limit:
        raise InvalidInput(f"the mock makes images and videos up to {limit}x{limit} (asked: {width}x{height})")
    return width, height


def _seed(seed: int | None) -> int:
    """The request's seed, or a random one (as a diffusion model without a seed does)."""
    return seed if seed is not None else random.getrandbits(63)


def _images(request: ImageRequest, width: int, height: int, seed: int) -> list[MediaItem]:
    """``request.n`` images; image ``i`` uses seed + i, so that they differ."""
    transparent = request.background == "transparent"
    items = []
    for index in range(request.n):
        image = Scene.of(request.prompt, request.negative_prompt, seed + index).render(width, height,
                                                                                        transparent=transparent)
        data = encode_image(label(image, request.prompt[:60]), request.output_format, request.output_compression)
        items.append(MediaItem(data, request.output_format, revised_prompt=request.prompt))
    return items
