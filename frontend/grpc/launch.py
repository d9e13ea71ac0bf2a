"""What the daemon needs to start gRPC server processes: their settings and entry point, without grpc.

The supervisor imports this module only; grpc itself is imported in the ``dyn-grpc`` child processes.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

import msgspec

from ..gateway.settings import GatewaySettings


class GrpcSettings(msgspec.Struct, frozen=True):
    """What a gRPC server process needs beyond the gateway settings."""

    host: str
    port: int
    reuse_port: bool  # several server processes share the port
    tls_cert_path: str  # PEM; TLS when set (with its key; daemon/tls.py checked both at start-up)
    tls_key_path: str
    tls_client_ca_path: str  # PEM; mutual TLS when set
    stream_window_bytes: int  # HTTP/2 initial stream window; 0 = gRPC's automatic (BDP-probed) sizing
    max_message_bytes: int  # largest request message (the HTTP body limit)

    @classmethod
    def from_config(cls, config: Any) -> "GrpcSettings":
        return cls(host=config.kserve_grpc_host or config.http_host, port=config.kserve_grpc_port,
                   reuse_port=config.kserve_grpc_workers > 1, tls_cert_path=config.tls_cert_path,
                   tls_key_path=config.tls_key_path, tls_client_ca_path=config.tls_client_ca_path,
                   stream_window_bytes=config.grpc_initial_stream_window_size,
                   max_message_bytes=int(config.http_body_limit_mb * 1024 * 1024))

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def run(gateway_settings: GatewaySettings, settings: GrpcSettings, ready: Connection) -> None:
    """Process entry (``Supervisor._start_ready``): serve until SIGTERM."""
    from .server import run as run_server

    run_server(gateway_settings, settings, ready)
