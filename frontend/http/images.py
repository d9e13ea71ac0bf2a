"""POST /v1/images/generations: OpenAI's image API plus Dynamo's ``nvext`` (diffusion settings), served by
workers whose card has the ``images`` type. One worker makes all ``n`` images of a request."""

from __future__ import annotations

import time

import msgspec

from ..gateway.state import Gateway
from ..pipeline.prepare import default_model, served_model
from ..protocol.engine import ImageRequest
from ..protocol.errors import InvalidRequest
from ..protocol.media import ImageData, ImageGenerationRequest, ImageNvExt, ImagesResponse
from .media_delivery import check_delivery, parse_size, produce
from .reply import send_json
from .streaming import decode_request

_decoder = msgspec.json.Decoder(ImageGenerationRequest)


async def handle(gateway: Gateway, scope, proto, body: bytes) -> None:
    request: ImageGenerationRequest = decode_request(_decoder, body)
    width, height = parse_size(request.size)
    _check(gateway, request)
    model = served_model(gateway, default_model(gateway, request.model, "images"), "images")
    nvext = request.nvext or ImageNvExt()
    engine_request = ImageRequest(
        gateway.new_request_id(), request.prompt, model.name, request.n, width, height, request.output_format,
        request.output_compression, request.quality, request.background, nvext.negative_prompt,
        nvext.num_inference_steps, nvext.guidance_scale, nvext.seed)
    produced = await produce(gateway, scope, proto, model, engine_request, request.response_format)
    if produced is None:
        return  # the client left
    data = [ImageData(b64_json, url, item.revised_prompt) for item, b64_json, url in produced]
    size = request.size if width else None
    send_json(proto, 200, ImagesResponse(int(time.time()), data, request.background, request.output_format,
                                         request.quality, size))


def _check(gateway: Gateway, request: ImageGenerationRequest) -> None:
    """Known fields whose feature is not available, and combinations that cannot work, are a 400."""
    if request.stream or request.partial_images:
        raise InvalidRequest("streaming partial images is not supported by this server", param="stream")
    if request.input_reference is not None:
        raise InvalidRequest("input_reference (image-to-image) is not supported by this server",
                             param="input_reference")
    if request.background == "transparent" and request.output_format == "jpeg":
        raise InvalidRequest("a transparent background needs output_format png or webp", param="background")
    check_delivery(gateway, request.response_format)
