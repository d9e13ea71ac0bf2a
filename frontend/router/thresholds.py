"""Busy thresholds: when a worker takes no new requests, per model, changeable at run time.

A worker is busy when its active KV blocks exceed ``active_decode_blocks_threshold`` of its KV blocks, when its
active prefill tokens exceed ``active_prefill_tokens_threshold``, or when they exceed
``active_prefill_tokens_threshold_frac`` of its ``max_num_batched_tokens`` (0 turns a check off). The daemon's
flags give every model's defaults; the admin API (``POST /busy_threshold``) replaces them for one model. The
replacements live in one small JSON file in the run directory, written atomically, which every HTTP process
re-reads when it changes (checked at most every ``RELOAD_INTERVAL_S``): a change made through any process
applies in all of them within that time.
"""

from __future__ import annotations

import fcntl
import os
import time

import msgspec

RELOAD_INTERVAL_S = 0.1


class BusyThresholds(msgspec.Struct, frozen=True, kw_only=True):
    """One model's thresholds; 0 = that check is off."""

    active_decode_blocks_threshold: float = 0.0
    active_prefill_tokens_threshold: int = 0
    active_prefill_tokens_threshold_frac: float = 0.0

    @property
    def on(self) -> bool:
        return bool(self.active_decode_blocks_threshold or self.active_prefill_tokens_threshold
                    or self.active_prefill_tokens_threshold_frac)

    def busy(self, blocks: int, total_blocks: int, prefill_tokens: int, max_batched_tokens: int) -> bool:
        """Whether a worker with this load (and these capacities; 0 = unknown) is busy."""
        if self.active_prefill_tokens_threshold and prefill_tokens > self.active_prefill_tokens_threshold:
            return True
        frac = self.active_prefill_tokens_threshold_frac
        if frac and max_batched_tokens and prefill_tokens > frac * max_batched_tokens:
            return True
        threshold = self.active_decode_blocks_threshold
        return bool(threshold and total_blocks and blocks / total_blocks > threshold)


_overrides_decoder = msgspec.json.Decoder(dict[str, BusyThresholds])


class ThresholdTable:
    """The thresholds of every model: the defaults, replaced per model by the shared file's entries."""

    def __init__(self, defaults: BusyThresholds, path: str = "") -> None:
        self.defaults = defaults
        self.path = path  # "": no run-time changes (tests, tools)
        self._overrides: dict[str, BusyThresholds] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked_at = -RELOAD_INTERVAL_S

    def of(self, model: str) -> BusyThresholds:
        self._refresh()
        return self._overrides.get(model, self.defaults)

    def active(self, model: str) -> BusyThresholds | None:
        """``model``'s thresholds when one of its checks is on; None lets routing skip the load checks."""
        thresholds = self.of(model)
        return thresholds if thresholds.on else None

    def overrides(self) -> dict[str, BusyThresholds]:
        """The models whose thresholds were changed at run time."""
        self._refresh()
        return dict(self._overrides)

    def set(self, model: str, thresholds: BusyThresholds) -> None:
        """Replace ``model``'s thresholds in every HTTP process (read-modify-write under a lock)."""
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self._read()
            current[model] = thresholds
            temporary = f"{self.path}.{os.getpid()}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(msgspec.json.encode(current))
            os.replace(temporary, self.path)
        self._checked_at = -RELOAD_INTERVAL_S  # this process sees its own change at once

    def _refresh(self) -> None:
        if not self.path:
            return
        now = time.monotonic()
        if now - self._checked_at < RELOAD_INTERVAL_S:
            return
        self._checked_at = now
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (status.st_mtime_ns, status.st_ino)
        if stamp != self._stamp:
            self._stamp = stamp
            self._overrides = self._read()

    def _read(self) -> dict[str, BusyThresholds]:
        try:
            with open(self.path, "rb") as handle:
                return _overrides_decoder.decode(handle.read())
        except (FileNotFoundError, msgspec.DecodeError):
            return {}
