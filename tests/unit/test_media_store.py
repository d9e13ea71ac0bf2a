"""The media store (frontend/stores/media.py): names, URLs, expiry and the size bound."""

from __future__ import annotations

import os
import time

import pytest

from frontend.stores.media import MediaSettings, MediaStore


def store(tmp_path, **settings) -> MediaStore:
    return MediaStore(MediaSettings(path=str(tmp_path / "media"), **settings))


def test_put_and_get(tmp_path):
    media = store(tmp_path)
    name = media.put(b"\x89PNG...", "png")
    assert name.endswith(".png") and len(name) == 26
    assert media.get(name) == (b"\x89PNG...", "image/png")
    assert media.put(b"x", "png") != name


def test_url_uses_the_request_origin_or_the_public_url(tmp_path):
    assert store(tmp_path).url("a.png", "http", "127.0.0.1:8000") == "http://127.0.0.1:8000/v1/media/a.png"
    public = store(tmp_path, public_url="https://api.example.com")
    assert public.url("a.png", "http", "ignored") == "https://api.example.com/v1/media/a.png"


@pytest.mark.parametrize("name", ["../secret.png", "a.png", "x" * 22 + ".exe", "x" * 22 + ".png/../y",
                                  "", "x" * 22 + ".PNG"])
def test_names_that_are_not_store_names_are_never_read(tmp_path, name):
    assert store(tmp_path).get(name) is None


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError):
        store(tmp_path).put(b"x", "exe")


def test_expired_files_are_gone(tmp_path):
    media = store(tmp_path, ttl_s=60)
    name = media.put(b"old", "gif")
    path = os.path.join(media.settings.path, name)
    past = time.time() - 120
    os.utime(path, (past, past))
    assert media.get(name) is None
    media.put(b"new", "gif")  # a put sweeps expired files
    assert not os.path.exists(path)


def test_the_oldest_files_go_when_the_store_is_full(tmp_path):
    media = store(tmp_path, max_bytes=250)
    names = []
    for index in range(3):
        names.append(media.put(bytes(100), "mp4"))
        stamp = time.time() - 10 + index
        os.utime(os.path.join(media.settings.path, names[-1]), (stamp, stamp))
    assert media.get(names[0]) is None  # 300 bytes did not fit: the oldest went
    assert media.get(names[1]) is not None and media.get(names[2]) is not None
    assert sum(os.path.getsize(e.path) for e in os.scandir(media.settings.path)) <= 250


def test_no_path_means_disabled(tmp_path):
    media = MediaStore(MediaSettings())
    assert not media.enabled and media.get("x" * 22 + ".png") is None
