"""How a process reaches etcd (``--discovery-backend etcd``): built from the ``discovery`` options by the
daemon (``DiscoveryConfig.etcd``) and by the worker commands (``frontend/worker/cli.py``)."""

from __future__ import annotations

import msgspec


class EtcdSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``endpoints``: comma-separated ``http(s)://host:port``; TLS files (PEM) and an etcd user, all optional."""

    endpoints: str = "http://127.0.0.1:2379"
    ca_path: str = ""
    cert_path: str = ""
    key_path: str = ""
    username: str = ""
    password: str = ""

    def __repr__(self) -> str:
        shown = {field: "***" if field in ("username", "password") and getattr(self, field) else getattr(self, field)
                 for field in self.__struct_fields__}
        return f"EtcdSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"
