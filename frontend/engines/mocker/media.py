"""Mock images and videos: real, decodable files whose pixels depend on the prompt and the seed.

A *scene* is drawn from a random generator seeded by (prompt, negative prompt, seed): a two-colour gradient
background and a few coloured discs with velocities. An image is the scene at rest with the prompt written in
a corner; frame ``i`` of a video has every disc moved ``i`` steps (bouncing off the edges). Encoding uses
Pillow (PNG, JPEG, WebP, animated WebP and GIF) and, for MP4 (H.264), the ffmpeg binary of the
``imageio-ffmpeg`` package when it is installed (the ``media`` extra); without it a video is animated WebP.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from dataclasses import dataclass

import xxhash
from PIL import Image, ImageDraw

try:  # optional: the `media` extra
    import imageio_ffmpeg
except ImportError:  # pragma: no cover - depends on the installation
    imageio_ffmpeg = None

VIDEO_FORMATS = ("mp4", "webp", "gif")
DISCS = 6


@dataclass(frozen=True)
class Disc:
    x: float
    y: float
    dx: float
    dy: float
    radius: float
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """What a prompt and seed look like: background colours and moving discs (coordinates in 0..1)."""

    top: tuple[int, int, int]
    bottom: tuple[int, int, int]
    discs: tuple[Disc, ...]

    @classmethod
    def of(cls, prompt: str, negative_prompt: str | None, seed: int) -> "Scene":
        rng = random.Random(xxhash.xxh3_64_intdigest(f"{prompt}\0{negative_prompt or ''}\0{seed}".encode()))

        def color() -> tuple[int, int, int]:
            return rng.randrange(256), rng.randrange(256), rng.randrange(256)

        discs = tuple(Disc(rng.random(), rng.random(), rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03),
                           rng.uniform(0.05, 0.2), color()) for _ in range(DISCS))
        return cls(color(), color(), discs)

    def render(self, width: int, height: int, step: int = 0, transparent: bool = False) -> Image.Image:
        """The scene after ``step`` moves, as an RGB image (RGBA with a clear background if ``transparent``)."""
        if transparent:
            image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        else:
            mask = Image.linear_gradient("L").resize((width, height))
            image = Image.composite(Image.new("RGB", (width, height), self.bottom),
                                    Image.new("RGB", (width, height), self.top), mask)
        draw = ImageDraw.Draw(image)
        side = min(width, height)
        for disc in self.discs:
            x, y = _bounce(disc.x + disc.dx * step), _bounce(disc.y + disc.dy * step)
            r = disc.radius * side
            draw.ellipse((x * width - r, y * height - r, x * width + r, y * height + r), fill=disc.color)
        return image


def _bounce(position: float) -> float:
    """A coordinate moving in 0..1 that reflects off both edges."""
    position %= 2.0
    return 2.0 - position if position > 1.0 else position


def encode_image(image: Image.Image, file_format: str, compression: int | None) -> bytes:
    """PNG, JPEG or WebP bytes (``compression``: the JPEG/WebP quality, 0-100)."""
    buffer = io.BytesIO()
    quality = 90 if compression is None else compression
    if file_format == "png":
        image.save(buffer, "PNG")
    else:
        image.save(buffer, "JPEG" if file_format == "jpeg" else "WEBP", quality=quality)
    return buffer.getvalue()


def label(image: Image.Image, text: str) -> Image.Image:
    """The image with ``text`` written in its top-left corner (white on a dark box)."""
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((4, 4), text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255))
    return image


def video_format(hint: str) -> str:
    """The container the mock makes for an ``output_format`` hint ("" = mp4 if possible)."""
    if hint in ("", "mp4"):
        return "mp4" if imageio_ffmpeg is not None else "webp"
    return hint


def encode_video(frames: list[Image.Image], fps: int, file_format: str) -> bytes:
    """The frames as an MP4 (H.264), animated WebP or GIF file."""
    if file_format == "mp4":
        return _mp4(frames, fps)
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP" if file_format == "webp" else "GIF", save_all=True, append_images=frames[1:],
                   duration=max(1, round(1000 / fps)), loop=0)
    return buffer.getvalue()


def _mp4(frames: list[Image.Image], fps: int) -> bytes:
    assert imageio_ffmpeg is not None
    width, height = frames[0].size
    handle, path = tempfile.mkstemp(suffix=".mp4")
    os.close(handle)
    try:
        writer = imageio_ffmpeg.write_frames(
            path, (width, height), fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-preset", "veryfast", "-movflags", "+faststart"])
        writer.send(None)
        for frame in frames:
            writer.send(frame.convert("RGB").tobytes())
        writer.close()
        with open(path, "rb") as handle_in:
            return handle_in.read()
    finally:
        os.unlink(path)
