"""The gateway's view of the served models, kept current from the registry's snapshots.

Sockets:
    recv_from_registry  SUB  connect  the registry's PUB (ipc)  Snapshot
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, NamedTuple

import msgspec
import zmq
from tokenizers import Tokenizer

from ..protocol import registry as wire
from ..protocol.registry import Instance, ModelCard
from ..tokenizer.model_files import eos_token_ids, load_tokenizer
from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer

log = logging.getLogger(__name__)


class ServedModel:
    """One model name with its card, tokenizer (for detokenization) and live instances.

    A model that serves only media types (images, videos) has no tokenizer here (``tokenizer`` is None):
    its prompts go to the worker as text. Handlers check the model's types before using the tokenizer.
    """

    def __init__(self, card: ModelCard, overrides: "ModelOverrides") -> None:
        self.card = card
        self.name = card.name
        self.created = int(time.time())
        self.files_path = overrides.files_path(card)
        self.tokenizer: Tokenizer | None = load_tokenizer(self.files_path) if card.tokenized() else None
        self.eos_token_ids = eos_token_ids(self.files_path, self.tokenizer) if self.tokenizer is not None else []
        self.block_size = overrides.kv_cache_block_size or card.kv_block_size
        self.instance_ids: list[str] = []
        self.total_kv_blocks: dict[str, int] = {}
        self.max_batched_tokens: dict[str, int] = {}


class ModelOverrides(NamedTuple):
    """What the daemon's flags change in the models its workers register: ``--model-name`` / ``--model-path``
    (that model's tokenizer and template files are read from a local directory rather than the card's path,
    which may be on the worker's machine) and ``--kv-cache-block-size`` (every model's routing block size)."""

    model_name: str = ""
    model_path: str = ""
    kv_cache_block_size: int = 0

    def files_path(self, card: ModelCard) -> str:
        """Where the frontend reads ``card``'s model files from."""
        return self.model_path if self.model_path and card.name == self.model_name else card.model_path


# How long a starting gateway process waits for its first table (the registry answers a new subscriber at
# once); past it the process starts with an empty table, filled by the next periodic snapshot.
FIRST_SNAPSHOT_WAIT_S = 3.0


class ModelTable:
    """Models by name, replaced as a whole on every registry snapshot with a new version.

    The constructor waits (at most ``first_snapshot_wait_s``) for the registry's first snapshot, so a process
    that starts serving already knows the models the daemon's other processes serve.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, context: zmq.Context, endpoint: str,
                 on_instances: Callable[[list[Instance]], None], overrides: ModelOverrides = ModelOverrides(),
                 first_snapshot_wait_s: float = FIRST_SNAPSHOT_WAIT_S) -> None:
        self._on_instances = on_instances
        self._overrides = overrides
        self.version = -1
        self.models: dict[str, ServedModel] = {}
        self.instances: list[Instance] = []
        sock = open_socket(context, zmq.SUB, subscribe=b"", connect=endpoint)
        if sock.poll(int(first_snapshot_wait_s * 1000)):
            self._on_snapshot(sock.recv_multipart())
        else:
            log.warning("no model table from the registry yet; starting with none",
                        extra={"waited_s": first_snapshot_wait_s})
        self._drainer = SocketDrainer(loop, sock, self._on_snapshot)

    def _on_snapshot(self, frames: list[bytes]) -> None:
        try:
            snapshot = wire.snapshot_decoder.decode(frames[-1])
        except msgspec.DecodeError:
            log.warning("malformed registry snapshot")
            return
        if snapshot.version == self.version:
            return
        self.version = snapshot.version
        self.apply(snapshot.instances)

    def apply(self, instances: list[Instance]) -> None:
        """Rebuild the table from the live instances (models keep their loaded tokenizer)."""
        models: dict[str, ServedModel] = {}
        for instance in sorted(instances, key=lambda i: i.instance_id):
            model = models.get(instance.card.name)
            if model is None:
                model = self.models.get(instance.card.name)
                if model is None or model.card != instance.card:
                    model = self._load(instance.card, self._overrides)
                    if model is None:
                        continue
                model.instance_ids = []
                model.total_kv_blocks = {}
                model.max_batched_tokens = {}
                models[instance.card.name] = model
            if instance.draining:
                continue  # finishing its requests (still connected), but routed nothing new
            model.instance_ids.append(instance.instance_id)
            runtime = instance.card.runtime_config
            for key, per_instance in (("total_kv_blocks", model.total_kv_blocks),
                                      ("max_num_batched_tokens", model.max_batched_tokens)):
                value = runtime.get(key)
                if isinstance(value, int):
                    per_instance[instance.instance_id] = value
        self.models = models
        self.instances = list(instances)
        self._on_instances(self.instances)

    @staticmethod
    def _load(card: ModelCard, overrides: ModelOverrides) -> ServedModel | None:
        try:
            return ServedModel(card, overrides)
        except Exception as exc:  # unreadable model files: the model is not served, the rest is
            log.error("cannot load model files", extra={"model": card.name, "path": overrides.files_path(card),
                                                        "error": str(exc)})
            return None

    def close(self) -> None:
        self._drainer.close()
