"""Video generation, Dynamo's API: ``POST /v1/videos`` (alias ``/v1/videos/generations``) answers one
``video`` object when the video is made; ``POST /v1/videos/stream`` (alias ``/v1/videos/generations/stream``)
streams every frame as a JPEG part of ``multipart/x-mixed-replace; boundary=frame`` (MJPEG, viewable in a
browser ``<img>`` or ``ffplay``) as the worker makes it. Served by workers whose card has the ``videos``
type; a client that leaves aborts the generation on the worker.
"""

from __future__ import annotations

import time

import msgspec

from ..gateway.state import Gateway
from ..pipeline.prepare import default_model, pinned_instance, served_model
from ..pipeline.unary import UnaryCall
from ..protocol.engine import MediaProgress, VideoRequest
from ..protocol.errors import EngineError, InvalidRequest, RequestError
from ..protocol.media import VideoData, VideoGenerationRequest, VideoNvExt, VideoResponse
from .media_delivery import check_delivery, parse_size, produce
from .reply import send_json
from .streaming import StreamWriter, decode_request, open_stream

_decoder = msgspec.json.Decoder(VideoGenerationRequest)
MAX_SECONDS = 60.0
MJPEG_HEADERS = [("content-type", "multipart/x-mixed-replace; boundary=frame"), ("cache-control", "no-cache"),
                 ("x-accel-buffering", "no")]


async def generate(gateway: Gateway, scope, proto, body: bytes) -> None:
    """POST /v1/videos: one JSON ``video`` object with the file as a URL or base64."""
    request, model, engine_request = _prepare(gateway, body, stream_frames=False)
    started = time.perf_counter()
    produced = await produce(gateway, scope, proto, model, engine_request, request.response_format)
    if produced is None:
        return  # the client left
    data = [VideoData(item.format, url, b64_json, item.fps) for item, b64_json, url in produced]
    send_json(proto, 200, VideoResponse("video-" + engine_request.request_id, model.name, int(time.time()), data,
                                        inference_time_s=round(time.perf_counter() - started, 3)))


async def stream(gateway: Gateway, scope, proto, body: bytes) -> None:
    """POST /v1/videos/stream: MJPEG, one part per frame as the worker makes it."""
    _, model, engine_request = _prepare(gateway, body, stream_frames=True)
    writer: StreamWriter | None = None
    try:
        async with UnaryCall(gateway, model, engine_request, pinned=pinned_instance(gateway, scope.headers),
                             disconnected=proto.client_disconnect) as call:
            async for item in call.replies():
                if not isinstance(item, MediaProgress) or not item.frame:
                    continue
                if writer is None:
                    writer = open_stream(gateway, scope, proto, MJPEG_HEADERS)
                if not await writer.send(_part(item.frame)):
                    return  # the client left: leaving the call aborts the worker
    except RequestError:
        if writer is None:
            raise  # nothing sent yet: an ordinary error response
        return  # the status is sent: end the stream without the closing boundary
    if writer is None:
        raise EngineError("the worker sent no frames for a streamed video")
    await writer.send(b"--frame--\r\n")


def _part(jpeg: bytes) -> bytes:
    header = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return header + jpeg + b"\r\n"


def _prepare(gateway: Gateway, body: bytes, *, stream_frames: bool):
    """The decoded request, its model and the engine request; any problem is a 400 (404/503 for the model)."""
    request: VideoGenerationRequest = decode_request(_decoder, body)
    width, height = parse_size(request.size)
    if request.input_reference is not None:
        raise InvalidRequest("input_reference (image-to-video) is not supported by this server",
                             param="input_reference")
    if not stream_frames:
        check_delivery(gateway, request.response_format)
    model = served_model(gateway, default_model(gateway, request.model, "videos"), "videos")
    nvext = request.nvext or VideoNvExt()
    engine_request = VideoRequest(
        gateway.new_request_id(), request.prompt, model.name, width, height, _seconds(request.seconds),
        nvext.fps, nvext.num_frames, request.output_format or "", nvext.negative_prompt,
        nvext.num_inference_steps, nvext.guidance_scale, nvext.seed, stream_frames)
    return request, model, engine_request


def _seconds(value: float | str | None) -> float | None:
    """Clip length: a number or a numeric string ("4", OpenAI's form), more than 0 and at most a minute."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_SECONDS:
        raise InvalidRequest(f"seconds must be a number above 0 and at most {MAX_SECONDS:g}", param="seconds")
    return seconds
