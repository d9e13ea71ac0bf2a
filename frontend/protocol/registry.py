"""Discovery channel: workers register models and heartbeat; the registry publishes who serves what.

Sockets:
    worker DEALER  --[Register | Heartbeat | Drain | Unregister]-->  registry ROUTER (``--registry-endpoint``, tcp)
    worker DEALER  <--[Ack]-----------------------------------  registry ROUTER
    registry PUB   --[Snapshot]-->  gateway SUB (ipc, in the run directory)

With ``--discovery-backend etcd`` the workers write their ``Instance`` to etcd instead
(``frontend/transport/etcd_keys.py``) and the registry process publishes the same Snapshots from its watch.

Framing: one MessagePack frame per message (tagged Structs). The registry sends the whole table on every
change and once a second, so a late subscriber catches up without a request of its own.
A heartbeat for an instance the registry does not know (it restarted, or the lease expired) is answered with
``Ack(ok=False, unknown_instance=True)`` and the worker registers again. A worker that is shutting down sends
``Drain`` first: it stays in the table, marked ``draining``, so its requests in flight finish, but gets no new
ones; then ``Unregister``.
"""

from __future__ import annotations

import msgspec

MODEL_TYPES = ("chat", "completions", "embedding", "images", "videos")
DISAGGREGATION_MODES = ("agg", "prefill", "decode")  # a worker's role (Dynamo's --disaggregation-mode)
TOKENIZED_TYPES = ("chat", "completions", "embedding")  # the frontend tokenizes their requests


class ModelCard(msgspec.Struct, omit_defaults=True, frozen=True):
    """What the frontend needs to serve a model: where its tokenizer/template live and its limits.

    ``model_path`` is a directory with tokenizer.json, tokenizer_config.json (chat template), config.json and
    optionally generation_config.json; it must exist at the same path on the frontend's machine (a model
    whose types are all media types, images and videos, needs none of these files on the frontend).
    ``checksum`` is a digest of the tokenizer and chat templates (``frontend.worker.checksum``), filled in by
    the worker SDK at registration.
    """

    name: str
    model_path: str
    model_types: list[str] = msgspec.field(default_factory=lambda: ["chat", "completions"])
    context_length: int = 8192
    kv_block_size: int = 16
    runtime_config: dict = msgspec.field(default_factory=dict)
    checksum: str = ""
    # ``prefill``: the worker only prefills (legs with GenerateRequest.remote_decode); ``decode``: it decodes
    # from transferred KV and can also serve requests whole; ``agg``: whole requests. Not in ``checksum_key``:
    # prefill and decode workers serve one model name.
    disaggregation_mode: str = "agg"

    def checksum_key(self) -> tuple:
        """Fields that must agree between all workers serving the same model name."""
        return (self.model_path, tuple(self.model_types), self.context_length, self.kv_block_size, self.checksum)

    def differences(self, other: "ModelCard") -> list[str]:
        """What of ``checksum_key`` differs from ``other``, in words (for the registry's refusal)."""
        names = ("model path", "model types", "context length", "KV block size", "tokenizer/chat template checksum")
        return [name for name, mine, theirs in zip(names, self.checksum_key(), other.checksum_key())
                if mine != theirs]

    def tokenized(self) -> bool:
        """The frontend tokenizes this model's requests (it serves a type other than images and videos)."""
        return any(kind in TOKENIZED_TYPES for kind in self.model_types)


class Register(msgspec.Struct, tag="register"):
    """A worker instance announces itself and the model it serves."""

    instance_id: str
    namespace: str
    endpoint: str
    card: ModelCard


class Heartbeat(msgspec.Struct, tag="heartbeat"):
    """Keeps an instance's lease alive."""

    instance_id: str


class Drain(msgspec.Struct, tag="drain"):
    """A worker stops taking new requests and finishes those it has (before it unregisters)."""

    instance_id: str


class Unregister(msgspec.Struct, tag="unregister"):
    """A worker leaves on purpose (clean shutdown)."""

    instance_id: str


class Ack(msgspec.Struct, tag="ack", omit_defaults=True):
    """The registry's answer to every worker message."""

    ok: bool
    error: str | None = None
    unknown_instance: bool = False
    lease_ttl_s: float = 0.0


class Instance(msgspec.Struct, frozen=True):
    """One live worker instance as the gateways see it."""

    instance_id: str
    endpoint: str
    card: ModelCard
    draining: bool = False  # finishing its requests in flight; routers give it no new ones


class DiscoveryState(msgspec.Struct, frozen=True):
    """Where the table comes from when it is not the embedded registry: ``backend`` (``etcd``) and whether the
    registry process reaches it now (while not, the table is the last one seen)."""

    backend: str
    connected: bool


class Snapshot(msgspec.Struct, tag="snapshot"):
    """Every live instance in the namespace; ``version`` grows with every change (and with every change of
    ``discovery``, which the embedded registry leaves None)."""

    version: int
    instances: list[Instance]
    discovery: DiscoveryState | None = None


ToRegistry = Register | Heartbeat | Drain | Unregister

to_registry_decoder = msgspec.msgpack.Decoder(ToRegistry)
ack_decoder = msgspec.msgpack.Decoder(Ack)
snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)
encoder = msgspec.msgpack.Encoder()
