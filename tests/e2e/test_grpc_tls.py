"""KServe gRPC over TLS with the daemon's --tls-* flags: mutual TLS accepts clients with a certificate only."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as triton
from e2e_support import MODEL, REPO, wait_until
from grpc_support import GrpcDaemon, inputs, text_of
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grpc-certs")
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen-certs"), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def mtls(certs):
    server = GrpcDaemon("--tls-cert-path", str(certs / "server.pem"), "--tls-key-path", str(certs / "server.key"),
                        "--tls-client-ca-path", str(certs / "ca.pem"), mock_workers=1)
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    server.http.close()
    server.base_url = f"https://localhost:{server.http_port}"
    server.http = httpx.Client(base_url=server.base_url, verify=context, timeout=30)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def tls_client(server: GrpcDaemon, certs: Path, *, client_cert: bool) -> triton.InferenceServerClient:
    identity = {"private_key": str(certs / "client.key"), "certificate_chain": str(certs / "client.pem")}
    return triton.InferenceServerClient(f"localhost:{server.grpc_port}", ssl=True,
                                        root_certificates=str(certs / "ca.pem"), **(identity if client_cert else {}))


def test_grpc_with_mutual_tls(mtls, certs):
    with tls_client(mtls, certs, client_cert=True) as client:
        wait_until(lambda: client.is_model_ready(MODEL), 20.0, "the model over gRPC", on_timeout=mtls.describe)
        text, finish_reason = text_of(client.infer(MODEL, inputs("Hello", max_tokens=4, ignore_eos=True)))
    assert text and finish_reason == "length"
    for refused in (tls_client(mtls, certs, client_cert=False), mtls.triton()):  # no client certificate; no TLS
        with refused, pytest.raises(InferenceServerException) as excinfo:
            refused.is_server_live()
        assert excinfo.value.status() == "StatusCode.UNAVAILABLE"
