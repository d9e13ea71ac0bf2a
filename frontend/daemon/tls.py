"""Start-up checks of the TLS settings: both files or neither, readable PEM, key matching certificate.

Problems are ConfigErrors naming the flags, so the daemon refuses to start with a clear message instead
of a traceback from deep inside the HTTP server.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..config.sections import HttpConfig
from ..protocol.errors import ConfigError


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path}: {exc.strerror}") from None


def _certificate(path: str, flag: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, flag))
    except ValueError:
        raise ConfigError(f"{flag}: {path} is not a PEM certificate") from None


def check_tls(http: HttpConfig) -> bool:
    """Validate the TLS flags; returns whether TLS is on."""
    cert_path, key_path, ca_path = http.tls_cert_path, http.tls_key_path, http.tls_client_ca_path
    if bool(cert_path) != bool(key_path):
        raise ConfigError("--tls-cert-path and --tls-key-path must be given together (or neither)")
    if not cert_path:
        if ca_path:
            raise ConfigError("--tls-client-ca-path needs --tls-cert-path and --tls-key-path")
        return False
    certificate = _certificate(cert_path, "--tls-cert-path")
    try:
        key = serialization.load_pem_private_key(_read(key_path, "--tls-key-path"), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"--tls-key-path: {key_path} is not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != certificate.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ConfigError(f"--tls-key-path: {key_path} is not the key of the certificate in --tls-cert-path")
    if ca_path:
        _certificate(ca_path, "--tls-client-ca-path")
    return True
