"""POST /v1/images/generations end to end with the official openai SDK and Pillow: formats, sizes, n, seeds,
transparency, url results served from the media store, nvext, errors (``tiny-image`` on the shared daemon)."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from e2e_support import MODEL
from PIL import Image

IMAGE = "tiny-image"


def _decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def _generate(client, **kwargs) -> list[Image.Image]:
    kwargs = {"model": IMAGE, "prompt": "A red kite over a beach", "size": "96x64", "response_format": "b64_json",
              **kwargs}
    return [_decode(item.b64_json) for item in client.images.generate(**kwargs).data]


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.convert("RGBA").tobytes() == b.convert("RGBA").tobytes()


def test_png_as_base64_with_the_response_fields(client):
    response = client.images.generate(model=IMAGE, prompt="A lighthouse at dusk", size="96x64", quality="high",
                                      response_format="b64_json", user="e2e-user",
                                      extra_body={"nvext": {"seed": 1, "num_inference_steps": 4,
                                                            "guidance_scale": 7.5}})
    assert response.created > 0
    assert response.output_format == "png" and response.size == "96x64" and response.quality == "high"
    [item] = response.data
    assert item.revised_prompt == "A lighthouse at dusk" and item.url is None
    image = _decode(item.b64_json)
    assert image.format == "PNG" and image.size == (96, 64) and image.mode == "RGB"


def test_pixels_follow_prompt_and_seed(client):
    seeded = {"extra_body": {"nvext": {"seed": 42}}}
    first, again = _generate(client, **seeded)[0], _generate(client, **seeded)[0]
    other_seed = _generate(client, extra_body={"nvext": {"seed": 43}})[0]
    other_prompt = _generate(client, prompt="A blue whale", **seeded)[0]
    negative = _generate(client, extra_body={"nvext": {"seed": 42, "negative_prompt": "clouds"}})[0]
    assert _same(first, again)
    assert not _same(first, other_seed) and not _same(first, other_prompt) and not _same(first, negative)


def test_n_images_differ(client):
    images = _generate(client, n=3, extra_body={"nvext": {"seed": 5}})
    assert len(images) == 3
    assert not _same(images[0], images[1]) and not _same(images[1], images[2])


@pytest.mark.parametrize("output_format, pil_format", [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_output_formats(client, output_format, pil_format):
    response = client.images.generate(model=IMAGE, prompt="A cat", size="64x64", response_format="b64_json",
                                      output_format=output_format, output_compression=70)
    assert response.output_format == output_format
    image = _decode(response.data[0].b64_json)
    assert image.format == pil_format and image.size == (64, 64)


def test_transparent_background(client):
    image = _generate(client, background="transparent", output_format="webp")[0]
    assert image.mode == "RGBA"
    assert image.getchannel("A").getextrema()[0] == 0  # some pixels are clear


def test_url_results_are_served_by_the_frontend(daemon, client):
    response = client.images.generate(model=IMAGE, prompt="A green field", size="80x48", n=2)  # url: the default
    assert all(item.b64_json is None for item in response.data)
    urls = [item.url for item in response.data]
    assert len(set(urls)) == 2
    for url in urls:
        assert url.startswith(daemon.base_url + "/v1/media/") and url.endswith(".png")
        served = daemon.http.get(url)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png"
        assert served.headers["x-content-type-options"] == "nosniff"
        image = Image.open(io.BytesIO(served.content))
        assert image.size == (80, 48)


def test_the_only_images_model_is_the_default(daemon):
    response = daemon.http.post("/v1/images/generations", json={"prompt": "A kite", "size": "32x32",
                                                                "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    assert _decode(response.json()["data"][0]["b64_json"]).size == (32, 32)


@pytest.mark.parametrize("path", ["/v1/media/nosuchfile0000000000000.png", "/v1/media/../../setup.cfg",
                                  "/v1/media/%2e%2e%2fsetup.cfg", "/v1/media/"])
def test_media_paths_that_are_not_stored_files(daemon, path):
    assert daemon.http.get(path).status_code == 404


@pytest.mark.parametrize("body, status, param", [
    ({"model": MODEL, "prompt": "x"}, 400, "model"),  # a chat model
    ({"model": "tiny-video", "prompt": "x"}, 400, "model"),
    ({"model": "no-such-model", "prompt": "x"}, 404, "model"),
    ({"model": IMAGE, "prompt": ""}, 400, "prompt"),
    ({"model": IMAGE, "prompt": "x", "size": "big"}, 400, "size"),
    ({"model": IMAGE, "prompt": "x", "size": "0x10"}, 400, "size"),
    ({"model": IMAGE, "prompt": "x", "size": "5000x10"}, 400, "size"),
    ({"model": IMAGE, "prompt": "x", "n": 11}, 400, "n"),
    ({"model": IMAGE, "prompt": "x", "output_format": "bmp"}, 400, "output_format"),
    ({"model": IMAGE, "prompt": "x", "response_format": "file"}, 400, "response_format"),
    ({"model": IMAGE, "prompt": "x", "background": "transparent", "output_format": "jpeg"}, 400, "background"),
    ({"model": IMAGE, "prompt": "x", "stream": True}, 400, "stream"),
    ({"model": IMAGE, "prompt": "x", "input_reference": "data:image/png;base64,AAAA"}, 400, "input_reference"),
    ({"model": IMAGE, "prompt": "x", "nvext": {"num_inference_steps": 0}}, 400, "nvext.num_inference_steps"),
    ({"model": IMAGE, "prompt": "x", "size": "4000x4000", "response_format": "b64_json"}, 400, None),  # the mock
])
def test_bad_requests(daemon, body, status, param):
    response = daemon.http.post("/v1/images/generations", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"], error


def test_sdk_raises_bad_request_for_a_chat_model(client):
    with pytest.raises(openai.BadRequestError, match="does not serve image generation"):
        client.images.generate(model=MODEL, prompt="x")
