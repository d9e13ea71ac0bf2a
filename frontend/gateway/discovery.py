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
from ..tokenizer.hub_files import local_model_dir
from ..tokenizer.model_files import eos_token_ids, load_tokenizer
from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer

log = logging.getLogger(__name__)


class ServedModel:
    """One model name with its card, tokenizer (for detokenization) and live instances.

    A model that serves only media types (images, videos) has no tokenizer here (``tokenizer`` is None):
    its prompts go to the worker as text. Handlers check the model's types before using the tokenizer.
    ``card`` is the newest card of the model's instances (instances of one model may differ in
    ``runtime_config``); the tokenizer is loaded again only when the files it comes from change. Prefill workers
    (``disaggregation_mode: prefill``) are listed apart, in ``prefill_ids``: only prefill legs go to them.
    """

    def __init__(self, card: ModelCard, overrides: "ModelOverrides") -> None:
        self.card = card
        self.name = card.name
        self.files_key = files_key(card)
        self.created = int(time.time())
        self.files_path = overrides.files_path(card)
        self.tokenizer: Tokenizer | None = load_tokenizer(self.files_path) if card.tokenized() else None
        self.eos_token_ids = eos_token_ids(self.files_path, self.tokenizer) if self.tokenizer is not None else []
        self.block_size = overrides.kv_cache_block_size or card.kv_block_size
        self.instance_ids: list[str] = []  # workers that take whole requests and decode legs (agg, decode)
        self.prefill_ids: list[str] = []  # prefill workers (disaggregated serving: the prefill legs)
        self.total_kv_blocks: dict[str, int] = {}
        self.max_batched_tokens: dict[str, int] = {}


def files_key(card: ModelCard) -> tuple[str, str, bool, int]:
    """What a :class:`ServedModel`'s loaded files depend on."""
    return card.name, card.model_path, card.tokenized(), card.kv_block_size


class ModelOverrides(NamedTuple):
    """What the daemon's flags change in the models its workers register: ``--model-name`` / ``--model-path``
    (that model's tokenizer and template files are read from a local directory rather than the card's path,
    which may be on the worker's machine) and ``--kv-cache-block-size`` (every model's routing block size).
    A card path that is not a directory here is resolved through the Hugging Face hub cache (``hub_files``)."""

    model_name: str = ""
    model_path: str = ""
    kv_cache_block_size: int = 0

    def files_path(self, card: ModelCard) -> str:
        """Where the frontend reads ``card``'s model files from (may download them: call it off the loop)."""
        if self.model_path and card.name == self.model_name:
            return self.model_path
        return local_model_dir(card.model_path, card.name) if card.tokenized() else card.model_path


# How long a starting gateway process waits for its first table (the registry answers a new subscriber at
# once); past it the process starts with an empty table, filled by the next periodic snapshot.
FIRST_SNAPSHOT_WAIT_S = 3.0
LOAD_RETRY_S = 30.0  # a model whose files could not be loaded is tried again after this long


class ModelTable:
    """Models by name, replaced as a whole on every registry snapshot with a new version.

    The constructor waits (at most ``first_snapshot_wait_s``) for the registry's first snapshot and loads its
    models, so a process that starts serving already knows the models the daemon's other processes serve. A model
    that appears later is loaded in a thread (its files may come from the hub: seconds), so the event loop keeps
    serving; it joins the table when loaded. A model whose files cannot be loaded is left out, logged, and tried
    again after ``LOAD_RETRY_S``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, context: zmq.Context, endpoint: str,
                 on_instances: Callable[[list[Instance]], None], overrides: ModelOverrides = ModelOverrides(),
                 first_snapshot_wait_s: float = FIRST_SNAPSHOT_WAIT_S) -> None:
        self._loop = loop
        self._on_instances = on_instances
        self._overrides = overrides
        self.version = -1
        self.models: dict[str, ServedModel] = {}
        self.instances: list[Instance] = []
        self.discovery: wire.DiscoveryState | None = None  # etcd: whether the registry reaches it (None: embedded)
        self._background = False  # the constructor loads on its own thread, before the loop runs
        self._loading: set[tuple] = set()  # files keys being loaded in a thread
        self._loaded: dict[tuple, ServedModel] = {}  # loaded in a thread, for the next apply
        self._retry_at: dict[tuple, float] = {}  # files keys that failed -> when to try again
        sock = open_socket(context, zmq.SUB, subscribe=b"", connect=endpoint)
        if sock.poll(int(first_snapshot_wait_s * 1000)):
            self._on_snapshot(sock.recv_multipart())
        else:
            log.warning("no model table from the registry yet; starting with none",
                        extra={"waited_s": first_snapshot_wait_s})
        self._background = True
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
        self.discovery = snapshot.discovery
        self.apply(snapshot.instances)

    def apply(self, instances: list[Instance]) -> None:
        """Rebuild the table from the live instances (models keep their loaded tokenizer)."""
        models: dict[str, ServedModel] = {}
        for instance in sorted(instances, key=lambda i: i.instance_id):
            model = models.get(instance.card.name)
            if model is None:
                model = self._model_for(instance.card)
                if model is None:
                    continue  # loading, or its files cannot be loaded
                model.card = instance.card
                model.instance_ids = []
                model.prefill_ids = []
                model.total_kv_blocks = {}
                model.max_batched_tokens = {}
                models[instance.card.name] = model
            if instance.draining:
                continue  # finishing its requests (still connected), but routed nothing new
            ids = model.prefill_ids if instance.card.disaggregation_mode == "prefill" else model.instance_ids
            ids.append(instance.instance_id)
            runtime = instance.card.runtime_config
            for key, per_instance in (("total_kv_blocks", model.total_kv_blocks),
                                      ("max_num_batched_tokens", model.max_batched_tokens)):
                value = runtime.get(key)
                if isinstance(value, int):
                    per_instance[instance.instance_id] = value
        self.models = models
        self.instances = list(instances)
        self._loaded.clear()  # what this table did not take is for cards gone meanwhile
        self._on_instances(self.instances)

    def _model_for(self, card: ModelCard) -> ServedModel | None:
        """The loaded model for ``card``: the table's own, one loaded in the background, or None while it loads
        (starting the load) or until a failed load may be retried."""
        key = files_key(card)
        current = self.models.get(card.name)
        if current is not None and current.files_key == key:
            return current
        if key in self._loaded:
            return self._loaded.pop(key)
        if key in self._loading or self._retry_at.get(key, 0.0) > time.monotonic():
            return None
        if not self._background:
            return self._loaded_now(key, self._load(card, self._overrides))
        self._loading.add(key)
        future = self._loop.run_in_executor(None, self._load, card, self._overrides)
        future.add_done_callback(lambda done: self._loaded_in_background(key, done.result()))
        return None

    def _loaded_now(self, key: tuple, model: ServedModel | None) -> ServedModel | None:
        if model is None:
            self._retry_at[key] = time.monotonic() + LOAD_RETRY_S
        else:
            self._retry_at.pop(key, None)
        return model

    def _loaded_in_background(self, key: tuple, model: ServedModel | None) -> None:
        self._loading.discard(key)
        model = self._loaded_now(key, model)
        if model is not None:
            self._loaded[key] = model
            self.apply(self.instances)

    @staticmethod
    def _load(card: ModelCard, overrides: ModelOverrides) -> ServedModel | None:
        try:
            return ServedModel(card, overrides)
        except Exception as exc:  # unreadable model files: the model is not served, the rest is
            log.error("cannot load model files", extra={"model": card.name, "path": card.model_path,
                                                        "error": str(exc)})
            return None

    def close(self) -> None:
        self._drainer.close()
