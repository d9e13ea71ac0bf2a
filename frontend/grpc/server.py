"""A gRPC server process (``dyn-grpc``): its own Gateway, like a Granian HTTP worker, behind grpc.aio.

The daemon starts ``--kserve-grpc-workers`` of them with ``--kserve-grpc-server`` (``Supervisor.start``,
through ``launch.run``). Each builds a :class:`~frontend.gateway.state.Gateway` from the daemon's
``GatewaySettings`` exactly as ``frontend/http/app.py`` does in ``__rsgi_init__`` (its own sockets, model
table and router state), binds the port, and reports READY. Several processes share the port with
``SO_REUSEPORT``: the kernel spreads connections over them, and a connection stays on one. SIGTERM
stops the server with a short grace period for calls in flight. With API keys configured (the gateway settings'
``api_keys``) every call but the health RPCs goes through ``auth.ApiKeyInterceptor``.
"""

from __future__ import annotations

import asyncio
import signal
from multiprocessing.connection import Connection

import grpc
import uvloop

from ..gateway.settings import GatewaySettings
from ..gateway.state import Gateway
from ..transport.process import tune_garbage_collector
from .auth import ApiKeyInterceptor
from .launch import GrpcSettings
from .proto.kserve_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from .service import KServeService

STOP_GRACE_S = 5.0


def server_options(settings: GrpcSettings) -> list[tuple[str, int]]:
    """grpc core channel arguments: message size limit, port sharing, a fixed stream window when given."""
    options = [("grpc.max_receive_message_length", settings.max_message_bytes),
               ("grpc.so_reuseport", int(settings.reuse_port))]
    if settings.stream_window_bytes:  # a fixed window: BDP probing would resize it
        options += [("grpc.http2.lookahead_bytes", settings.stream_window_bytes), ("grpc.http2.bdp_probe", 0)]
    return options


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _bind(server: grpc.aio.Server, settings: GrpcSettings) -> None:
    """Listen with the daemon's TLS settings, else in clear text."""
    if not settings.tls_cert_path:
        server.add_insecure_port(settings.address)
        return
    client_ca = _read(settings.tls_client_ca_path) if settings.tls_client_ca_path else None
    credentials = grpc.ssl_server_credentials([(_read(settings.tls_key_path), _read(settings.tls_cert_path))],
                                              root_certificates=client_ca, require_client_auth=client_ca is not None)
    server.add_secure_port(settings.address, credentials)


async def serve(gateway_settings: GatewaySettings, settings: GrpcSettings, ready: Connection) -> None:
    """Serve until SIGTERM; ``ready`` gets "ready" once the port is bound."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    gateway = Gateway(loop, gateway_settings)
    keys = gateway_settings.api_keys
    server = grpc.aio.server(options=server_options(settings),
                             interceptors=[ApiKeyInterceptor(keys)] if keys.enabled else None)
    add_GRPCInferenceServiceServicer_to_server(KServeService(gateway), server)
    try:
        _bind(server, settings)
        await server.start()
        tune_garbage_collector()
        ready.send("ready")
        ready.close()
        await stop.wait()
        await server.stop(STOP_GRACE_S)
    finally:
        gateway.close()


def run(gateway_settings: GatewaySettings, settings: GrpcSettings, ready: Connection) -> None:
    uvloop.run(serve(gateway_settings, settings, ready))
