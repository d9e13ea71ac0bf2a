"""Video generation end to end (``tiny-video`` on the shared daemon): Dynamo's request and response through the
openai SDK's generic ``post``, MP4 decoded with imageio-ffmpeg, animated WebP and GIF with Pillow, URL
results, the MJPEG stream, and errors. MP4 needs imageio-ffmpeg (the ``media`` extra); without it the mock
makes WebP, and the MP4 checks are skipped."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import tempfile

import httpx
import openai
import pytest
from e2e_support import MODEL, hang_up_after_sending, wait_routing_load_released, wait_until
from PIL import Image

VIDEO = "tiny-video"
try:
    import imageio_ffmpeg
except ImportError:  # pragma: no cover - depends on the installation
    imageio_ffmpeg = None
needs_ffmpeg = pytest.mark.skipif(imageio_ffmpeg is None, reason="imageio-ffmpeg is not installed")


def _create(client, path: str = "/videos", **body) -> dict:
    body = {"model": VIDEO, "prompt": "A paper boat on a pond", "size": "64x48", "response_format": "b64_json",
            **body}
    return client.post(path, cast_to=object, body=body)


def _mp4_frames(data: bytes) -> tuple[tuple[int, int], float, int]:
    """(size, fps, number of decoded frames) of an H.264 MP4 file, decoded by imageio-ffmpeg's ffmpeg."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", handle.name, "-f", "rawvideo",
                               "-pix_fmt", "rgb24", "-"], capture_output=True, timeout=60, check=True)
    stream = re.search(r"Video: h264.*?, (\d+)x(\d+).*?, ([\d.]+) fps", done.stderr.decode())
    assert stream is not None, done.stderr.decode()
    width, height, fps = int(stream.group(1)), int(stream.group(2)), float(stream.group(3))
    return (width, height), fps, len(done.stdout) // (width * height * 3)


def test_response_shape(client):
    video = _create(client, nvext={"num_frames": 3, "seed": 1}, output_format="webp", user="e2e-user")
    assert video["object"] == "video" and video["model"] == VIDEO
    assert video["status"] == "completed" and video["progress"] == 100
    assert video["id"].startswith("video-") and video["created"] > 0 and video["inference_time_s"] >= 0
    [item] = video["data"]
    assert item["output_format"] == "webp" and item["fps"] == 24 and "url" not in item


@needs_ffmpeg
def test_mp4_is_the_default_and_decodes(client):
    video = _create(client, seconds=1, nvext={"fps": 8, "seed": 3})
    [item] = video["data"]
    assert item["output_format"] == "mp4" and item["fps"] == 8
    size, fps, frames = _mp4_frames(base64.b64decode(item["b64_json"]))
    assert size == (64, 48) and fps == 8 and frames == 8


@needs_ffmpeg
def test_seconds_as_a_string_and_the_generations_alias(client):
    video = _create(client, "/videos/generations", seconds="2", nvext={"fps": 4})
    _, _, frames = _mp4_frames(base64.b64decode(video["data"][0]["b64_json"]))
    assert frames == 8


@pytest.mark.parametrize("output_format, pil_format", [("webp", "WEBP"), ("gif", "GIF")])
def test_animated_webp_and_gif(client, output_format, pil_format):
    video = _create(client, output_format=output_format, nvext={"num_frames": 5, "fps": 10})
    [item] = video["data"]
    assert item["output_format"] == output_format
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert image.format == pil_format and image.size == (64, 48) and image.n_frames == 5
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append(image.convert("RGB").tobytes())
    assert len(set(frames)) > 1  # the discs move


def test_frames_follow_prompt_and_seed(client):
    def first_frame(prompt: str, seed: int) -> bytes:
        video = _create(client, prompt=prompt, output_format="gif", nvext={"num_frames": 1, "seed": seed})
        return Image.open(io.BytesIO(base64.b64decode(video["data"][0]["b64_json"]))).convert("RGB").tobytes()

    assert first_frame("a boat", 1) == first_frame("a boat", 1)
    assert first_frame("a boat", 1) != first_frame("a boat", 2)
    assert first_frame("a boat", 1) != first_frame("a train", 1)


def test_url_result_is_served(daemon, client):
    video = _create(client, response_format="url", output_format="gif", nvext={"num_frames": 2})
    url = video["data"][0]["url"]
    assert url.startswith(daemon.base_url + "/v1/media/") and url.endswith(".gif")
    served = daemon.http.get(url)
    assert served.status_code == 200 and served.headers["content-type"] == "image/gif"
    assert Image.open(io.BytesIO(served.content)).n_frames == 2


def _mjpeg_parts(body: bytes) -> list[bytes]:
    """The JPEG payloads of a multipart/x-mixed-replace body with boundary ``frame``; checks the end marker."""
    assert body.endswith(b"--frame--\r\n")
    parts = []
    for chunk in body[: -len(b"--frame--\r\n")].split(b"--frame\r\n")[1:]:
        head, _, rest = chunk.partition(b"\r\n\r\n")
        length = int(dict(line.split(b": ", 1) for line in head.split(b"\r\n"))[b"Content-Length"])
        assert rest[length:] == b"\r\n"
        parts.append(rest[:length])
    return parts


@pytest.mark.parametrize("path", ["/v1/videos/stream", "/v1/videos/generations/stream"])
def test_mjpeg_stream(daemon, path):
    body = {"model": VIDEO, "prompt": "A paper boat", "size": "64x48", "nvext": {"num_frames": 6, "seed": 2}}
    with httpx.stream("POST", daemon.base_url + path, json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        data = response.read()
    frames = [Image.open(io.BytesIO(part)) for part in _mjpeg_parts(data)]
    assert len(frames) == 6
    assert all(frame.format == "JPEG" and frame.size == (64, 48) for frame in frames)


def test_leaving_a_stream_early_aborts_it_on_the_worker(daemon):
    """A realistic-speed worker (24 frames a second): the client leaves after the first frame, the worker
    stops cleanly and serves the next request."""
    mocker = daemon.start_mocker("--model-name", "slow-video", "--model-types", "videos", "--kv-events", "off",
                                 speedup="1")
    daemon.wait_model("slow-video")
    body = {"model": "slow-video", "prompt": "A long one", "size": "64x48",
            "nvext": {"num_frames": 600, "num_inference_steps": 1}}
    with httpx.stream("POST", daemon.base_url + "/v1/videos/stream", json=body, timeout=30) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    after = _create(daemon.client(), model="slow-video", output_format="gif",
                    nvext={"num_frames": 1, "num_inference_steps": 1})
    assert after["status"] == "completed"
    assert "Traceback" not in mocker.log_text()


MEDIA_DOORS = {
    "images": ("/v1/images/generations", {"prompt": "A slow one", "size": "64x48", "response_format": "b64_json",
                                          "nvext": {"num_inference_steps": 1000}}),
    "videos": ("/v1/videos", {"prompt": "A slow one", "size": "64x48", "response_format": "b64_json",
                              "nvext": {"num_frames": 600, "num_inference_steps": 1000}}),
    "video stream": ("/v1/videos/stream", {"prompt": "A slow one", "size": "64x48",
                                           "nvext": {"num_frames": 600, "num_inference_steps": 1}}),
}


@pytest.fixture(scope="module")
def slow_media(daemon):
    """A realistic-speed images and videos worker that logs each abort (debug)."""
    mocker = daemon.start_mocker("--model-name", "slow-media", "--model-types", "images,videos", "--kv-events", "off",
                                 "--log-level", "debug", speedup="1")
    daemon.wait_model("slow-media")
    return mocker


@pytest.mark.parametrize("door", sorted(MEDIA_DOORS))
def test_client_gone_before_the_first_byte_releases_everything(daemon, slow_media, door):
    """The client sends a slow media request and hangs up at once: the worker's request is aborted and the
    routing load counters are back to 0."""
    path, body = MEDIA_DOORS[door]

    def count(event: str) -> int:
        return slow_media.log_text(limit=10**7).count(f"unary request {event}")

    started = count("started")
    hang_up_after_sending(daemon, path, {**body, "model": "slow-media"})
    # a request whose client left while its body was read never reaches the worker; every other one must
    wait_until(lambda: count("started") > started and count("aborted") == count("started"), 10.0,
               f"the worker to abort every abandoned request ({door})", on_timeout=slow_media.describe)
    wait_routing_load_released(daemon, "slow-media", f"media requests abandoned before the first byte ({door})")


@pytest.mark.parametrize("body, status, param", [
    ({"model": MODEL, "prompt": "x"}, 400, "model"),  # a chat model
    ({"model": "tiny-image", "prompt": "x"}, 400, "model"),
    ({"model": "no-such-model", "prompt": "x"}, 404, "model"),
    ({"model": VIDEO, "prompt": ""}, 400, "prompt"),
    ({"model": VIDEO, "prompt": "x", "seconds": 0}, 400, "seconds"),
    ({"model": VIDEO, "prompt": "x", "seconds": "four"}, 400, "seconds"),
    ({"model": VIDEO, "prompt": "x", "seconds": 61}, 400, "seconds"),
    ({"model": VIDEO, "prompt": "x", "size": "64by48"}, 400, "size"),
    ({"model": VIDEO, "prompt": "x", "nvext": {"fps": 0}}, 400, "nvext.fps"),
    ({"model": VIDEO, "prompt": "x", "input_reference": "data:image/png;base64,AAAA"}, 400, "input_reference"),
    ({"model": VIDEO, "prompt": "x", "nvext": {"num_frames": 601}}, 400, None),  # the mock's limit
    ({"model": VIDEO, "prompt": "x", "output_format": "avi"}, 400, None),  # a format the mock cannot make
])
def test_bad_requests(daemon, body, status, param):
    for path in ("/v1/videos", "/v1/videos/stream"):
        response = daemon.http.post(path, json=body)
        assert response.status_code == status, (path, response.text)
        error = response.json()["error"]
        assert error["param"] == param and error["message"], error


def test_sdk_raises_bad_request_for_a_chat_model(client):
    with pytest.raises(openai.BadRequestError, match="does not serve video generation"):
        _create(client, model=MODEL)
