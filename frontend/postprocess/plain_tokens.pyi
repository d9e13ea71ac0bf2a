# Stub of frontend.postprocess.plain_tokens (native/plain_tokens.pyx).
from collections.abc import Callable
from typing import Any

from ..protocol.engine import RequestOutput
from ..transport.end_of_turn import TurnWriter

WRITTEN: int
NOT_PLAIN: int
CLIENT_GONE: int

class PlainTokens:
    def __init__(self, pipeline: Any, observer: Any, timing: Any, prefix: bytes, suffix: bytes, writer: TurnWriter,
                 output_ids: list[int] | None = None, cancel: Callable[[], None] | None = None) -> None: ...
    def take(self, output: RequestOutput) -> bool: ...
    def write(self, token_ids: list[int]) -> int: ...
