# Stub of frontend.postprocess.plain_tokens (native/plain_tokens.pyx).
from collections.abc import Callable
from typing import Any

WRITTEN: int
NOT_PLAIN: int
CLIENT_GONE: int

class PlainTokens:
    def __init__(self, pipeline: Any, observer: Any, timing: Any, prefix: bytes, suffix: bytes,
                 write_soon: Callable[[bytes], bool]) -> None: ...
    def write(self, token_ids: list[int]) -> int: ...
