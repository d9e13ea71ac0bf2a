"""Image and video generation APIs: OpenAI's ``POST /v1/images/generations`` and Dynamo's video API
(``POST /v1/videos`` and ``/v1/videos/generations``), with Dynamo's ``nvext`` extensions.

Unknown fields are ignored (``style``, ``moderation``, ``nvext.annotations``...). Fields whose feature is
not available (``stream`` / ``partial_images`` for images, ``input_reference``) are decoded so that the
handler can refuse them with a 400.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .openai import Seed

Prompt = Annotated[str, Meta(min_length=1, max_length=32000)]
Steps = Annotated[int, Meta(ge=1, le=1000)]
Guidance = Annotated[float, Meta(ge=0.0, le=100.0)]
ResponseFormat = Literal["url", "b64_json"]


class ImageNvExt(msgspec.Struct, kw_only=True):
    """Diffusion settings (Dynamo's image ``nvext``)."""

    negative_prompt: str | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    seed: Seed | None = None


class ImageGenerationRequest(msgspec.Struct, kw_only=True):
    """POST /v1/images/generations. ``size`` is ``WxH`` or ``auto``; ``model`` may be left out when exactly
    one images model is served."""

    prompt: Prompt
    model: str | None = None
    n: Annotated[int, Meta(ge=1, le=10)] = 1
    size: str = "auto"
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] = "auto"
    response_format: ResponseFormat = "url"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: Annotated[int, Meta(ge=0, le=100)] | None = None
    background: Literal["auto", "transparent", "opaque"] = "auto"
    user: str | None = None
    stream: bool = False
    partial_images: int | None = None
    input_reference: str | None = None
    nvext: ImageNvExt | None = None


class ImageData(msgspec.Struct, omit_defaults=True):
    """One image: ``b64_json`` or ``url`` as the request asked."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(msgspec.Struct, omit_defaults=True):
    created: int
    data: list[ImageData]
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None


class VideoNvExt(msgspec.Struct, kw_only=True):
    """Video settings (Dynamo's video ``nvext``); ``num_frames`` wins over ``seconds`` x ``fps``."""

    fps: Annotated[int, Meta(ge=1, le=120)] | None = None
    num_frames: Annotated[int, Meta(ge=1, le=2000)] | None = None
    negative_prompt: str | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    seed: Seed | None = None


class VideoGenerationRequest(msgspec.Struct, kw_only=True):
    """POST /v1/videos (/generations) and its ``/stream`` variant. ``seconds`` may be a number or a numeric
    string (OpenAI's form); ``output_format`` is a hint (mp4, webp, gif): the response says what was made."""

    prompt: Prompt
    model: str | None = None
    seconds: float | str | None = None
    size: str | None = None
    response_format: ResponseFormat = "url"
    output_format: str | None = None
    user: str | None = None
    input_reference: str | None = None
    nvext: VideoNvExt | None = None


class VideoData(msgspec.Struct, omit_defaults=True):
    """One video: its actual container format, ``url`` or ``b64_json``, and its frame rate."""

    output_format: str
    url: str | None = None
    b64_json: str | None = None
    fps: int | None = None


class VideoResponse(msgspec.Struct):
    """Dynamo's ``NvVideosResponse``; generation is synchronous, so the status is ``completed``."""

    id: str
    model: str
    created: int
    data: list[VideoData]
    inference_time_s: float
    object: str = "video"
    status: str = "completed"
    progress: int = 100
