# Stub of frontend.gateway.delivery (native/delivery.pyx).
from typing import Any

from ..protocol.engine import RequestOutput

def deliver(outputs: list[RequestOutput], streams: dict[str, Any]) -> None: ...
