"""Generated images and videos kept for ``response_format: url``: files in one directory that every HTTP
process shares (by default ``media/`` in the daemon's run directory).

A file's name is a random 128-bit token plus the format's extension; ``GET /v1/media/<name>`` serves it
(``frontend/http/media.py``) until it expires. The store is bounded: every ``put`` deletes expired files,
then the oldest ones while the directory holds more than ``max_bytes``. Files are written to a temporary
name and renamed, so a reader never sees a partial file. Names are checked against a strict pattern before
any file system access, so a request path cannot reach another file.
"""

from __future__ import annotations

import os
import re
import secrets
import time

import msgspec

from ..config.sections import MediaConfig

MEDIA_DIR = "media"
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
                 "mp4": "video/mp4"}
_NAME = re.compile(r"[A-Za-z0-9_-]{22}\.(png|jpeg|webp|gif|mp4)")


class MediaSettings(msgspec.Struct, frozen=True):
    """Where generated media live, for how long, how much, and the base of their URLs."""

    path: str = ""  # "": no store, url responses are refused with a 400
    ttl_s: float = 3600.0
    max_bytes: int = MediaConfig().media_store_max_bytes
    public_url: str = ""  # e.g. https://api.example.com; "": the request's scheme and Host header

    @classmethod
    def from_config(cls, media: MediaConfig, run_dir: str) -> "MediaSettings":
        """From the daemon's ``media`` section; the store defaults to ``media/`` in the run directory."""
        return cls(path=media.media_store_path or os.path.join(run_dir, MEDIA_DIR), ttl_s=media.media_store_ttl_s,
                   max_bytes=media.media_store_max_bytes, public_url=media.media_public_url.rstrip("/"))


class MediaStore:
    """The shared directory of generated files; one instance per HTTP process."""

    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        if settings.path:
            os.makedirs(settings.path, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.path)

    def put(self, data: bytes, file_format: str) -> str:
        """Store ``data``; returns its name. Makes room first (expired files, then the oldest)."""
        if file_format not in CONTENT_TYPES:
            raise ValueError(f"unknown media format {file_format!r}")
        self._sweep(len(data))
        name = f"{secrets.token_urlsafe(16)}.{file_format}"
        path = os.path.join(self.settings.path, name)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
        return name

    def get(self, name: str) -> tuple[bytes, str] | None:
        """(bytes, content type) of a stored, unexpired file; None otherwise."""
        if not self.enabled or not _NAME.fullmatch(name):
            return None
        path = os.path.join(self.settings.path, name)
        try:
            if os.stat(path).st_mtime + self.settings.ttl_s < time.time():
                return None
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        return data, CONTENT_TYPES[name.rsplit(".", 1)[1]]

    def url(self, name: str, scheme: str, host: str) -> str:
        """The absolute URL of a stored file (``public_url`` if set, else this request's origin)."""
        base = self.settings.public_url or f"{scheme}://{host}"
        return f"{base}/v1/media/{name}"

    def _sweep(self, incoming: int) -> None:
        """Delete expired files, then the oldest until ``incoming`` more bytes fit in ``max_bytes``."""
        entries = []
        deadline = time.time() - self.settings.ttl_s
        with os.scandir(self.settings.path) as scan:
            for entry in scan:
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # another process deleted it
                if stat.st_mtime < deadline:
                    _remove(entry.path)
                elif not entry.name.endswith(".tmp"):  # another process is writing it
                    entries.append((stat.st_mtime, stat.st_size, entry.path))
        total = sum(size for _, size, _ in entries) + incoming
        for _, size, path in sorted(entries):
            if total <= self.settings.max_bytes:
                break
            _remove(path)
            total -= size


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
