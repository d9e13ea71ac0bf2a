"""What the daemon needs to start gRPC server processes: their settings and entry point, without grpc.

The supervisor imports this module only; grpc itself is imported in the ``dyn-grpc`` child processes.
"""

from __future__ import annotations

from multiprocessing.connection import Connection

import msgspec

from ..config.sections import FrontendConfig
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
    def from_config(cls, config: FrontendConfig) -> "GrpcSettings":
        http, kserve = config.http, config.kserve
        return cls(host=kserve.kserve_grpc_host or http.http_host, port=kserve.kserve_grpc_port,
                   reuse_port=kserve.kserve_grpc_workers > 1, tls_cert_path=http.tls_cert_path,
                   tls_key_path=http.tls_key_path, tls_client_ca_path=http.tls_client_ca_path,
                   stream_window_bytes=kserve.grpc_initial_stream_window_size,
                   max_message_bytes=http.http_body_limit_bytes)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def run(gateway_settings: GatewaySettings, settings: GrpcSettings, ready: Connection) -> None:
    """Process entry (``Supervisor._start_ready``): serve until SIGTERM."""
    from .server import run as run_server

    run_server(gateway_settings, settings, ready)
