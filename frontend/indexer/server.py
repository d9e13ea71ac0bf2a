"""The KV indexer process: the single writer of the shared-memory block index.

Sockets:
    recv_from_registry   SUB     connect  registry PUB (ipc)             Snapshot: which workers exist
    recv_kv_events[w]    SUB     connect  worker w's KV event PUB (tcp)  [topic, seq, EventBatch]
    recv_load[w]         SUB     connect  worker w's load PUB (tcp)      LoadReport (protocol.load)
    request_replay[w]    DEALER  connect  worker w's replay ROUTER       [b"", start_seq] ->
                                                                          [b"", (topic,) seq, batch]..., end (seq -1)
    recv_routed          PULL    bind     ipc in the run directory       RoutedBlocks from the gateways
    send_status          PUB     bind     ipc in the run directory       IndexerStatus every second

A worker gets a slot in the index when it registers and loses it (with all its blocks) when it goes. A worker
with a replay endpoint is asked for everything its engine still buffers as soon as it joins (``catch-up``): a
restarted indexer, or a frontend started next to running workers, routes by their caches at once instead of
after their next events. A replay that has not ended within ``REPLAY_TIMEOUT_S``, or that holds more than
``MAX_HELD_BATCHES`` live batches, is given up as a gap without replay. A worker
that advertises a ``load_endpoint`` reports its own load, which the indexer stores in the slot for the routers
(in every router mode).
With ``use_kv_events`` off (``--no-kv-events``), only the routers' own decisions (RoutedBlocks) populate the
index, each for ``ttl_s`` (approximate mode); with events on, those decisions count for ``pending_ttl_s`` until
the worker's events confirm them. KV events are followed only with ``--router-mode kv``: no other router reads
the blocks, and decoding every worker's events cost ~6 µs of CPU per streamed token under round-robin.
"""

from __future__ import annotations

import logging
import time
from multiprocessing.connection import Connection

import msgspec
import zmq

from ..config.sections import RouterConfig
from ..config.topology import Endpoints
from ..kv import KvIndexWriter, chain_hashes, local_block_hashes
from ..protocol import indexer as indexer_wire, kv_events as events_wire, load as load_wire, registry as registry_wire
from ..protocol.registry import Instance
from ..transport.sockets import KV_EVENTS_HWM, open_socket
from .worker_state import WorkerKvState

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1.0
REPLAY_TIMEOUT_S = 5.0  # an engine answers from memory in milliseconds; one that does not is gone or wedged
MAX_HELD_BATCHES = 10_000  # live batches kept while a replay runs (one per engine step)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


class WorkerFeed:
    """A worker's event sockets and its event state."""

    def __init__(self, context: zmq.Context, instance: Instance, state: WorkerKvState, use_kv_events: bool) -> None:
        """Without ``use_kv_events`` the worker's cache is followed through routing decisions only."""
        config = instance.card.runtime_config
        self.instance = instance
        self.state = state
        self.events: zmq.Socket | None = None
        self.replay: zmq.Socket | None = None
        self.load: zmq.Socket | None = None
        self.replaying = False
        self.replay_deadline = 0.0  # time.monotonic() past which the running replay is given up
        self.held: list[tuple[int, bytes]] = []  # live batches that arrived during a replay
        load_endpoint = config.get("load_endpoint")
        if load_endpoint:
            self.load = open_socket(context, zmq.SUB, subscribe=b"", connect=load_endpoint)
        if not use_kv_events:
            return
        endpoint = config.get("kv_events_endpoint")
        if endpoint:
            self.events = open_socket(context, zmq.SUB, rcvhwm=KV_EVENTS_HWM,
                                      subscribe=str(config.get("kv_events_topic", "")), connect=endpoint)
        replay = config.get("kv_events_replay_endpoint")
        if replay:
            self.replay = open_socket(context, zmq.DEALER, connect=replay)

    def close(self) -> None:
        for sock in (self.events, self.replay, self.load):
            if sock is not None:
                sock.close(0)


class Indexer:
    """Keeps the shared index in step with the workers' KV events and the routers' decisions."""

    def __init__(self, context: zmq.Context, writer: KvIndexWriter, *, use_kv_events: bool, ttl_s: float,
                 pending_ttl_s: float) -> None:
        self.context = context
        self.writer = writer
        self.use_kv_events = use_kv_events
        self.prediction_ttl_s = pending_ttl_s if use_kv_events else ttl_s
        self.feeds: dict[str, WorkerFeed] = {}
        self.malformed = 0

    # ---- workers -------------------------------------------------------------------------------------

    def sync(self, instances: list[Instance]) -> None:
        live = {i.instance_id: i for i in instances}
        for instance_id in [iid for iid in self.feeds if iid not in live]:
            feed = self.feeds.pop(instance_id)
            feed.close()
            self.writer.free_slot(feed.state.slot)
            log.info("worker left the index", extra={"instance": instance_id})
        for instance_id, instance in live.items():
            if instance_id not in self.feeds:
                self._add(instance)
        for slot, instance_id in self.writer.slots():  # left by a predecessor for a worker gone since
            if instance_id not in live:
                self.writer.free_slot(slot)

    def _add(self, instance: Instance) -> None:
        try:
            slot = self.writer.assign_slot(instance.instance_id)
        except Exception as exc:  # no free slot: this worker is routed without KV awareness
            log.error("no KV index slot for worker", extra={"instance": instance.instance_id, "error": str(exc)})
            return
        state = WorkerKvState(instance.instance_id, slot, instance.card.kv_block_size, self.writer,
                              local_block_hashes, chain_hashes)
        feed = WorkerFeed(self.context, instance, state, self.use_kv_events)
        self.feeds[instance.instance_id] = feed
        if feed.replay is not None and feed.events is not None:
            self._request_replay(feed, 0, [])  # catch-up: the blocks the engine stored before we subscribed

    # ---- events --------------------------------------------------------------------------------------

    def on_event_frames(self, feed: WorkerFeed, frames: list[bytes]) -> None:
        if len(frames) != 3:
            self.malformed += 1
            return
        try:
            seq = events_wire.decode_seq(frames[1])
        except events_wire.EventDecodeError:
            self.malformed += 1
            return
        if feed.replaying:
            feed.held.append((seq, frames[2]))
            if len(feed.held) > MAX_HELD_BATCHES:
                self._give_up_replay(feed, "too many live batches held")
            return
        self._apply(feed, seq, frames[2])

    def _apply(self, feed: WorkerFeed, seq: int, payload: bytes) -> None:
        state = feed.state
        verdict = state.check_seq(seq)
        if verdict == "duplicate":
            return
        if verdict == "restart":
            state.drop_all()
        elif verdict == "gap":
            state.gaps += 1
            if feed.replay is not None:
                self._request_replay(feed, state.last_seq + 1, [(seq, payload)])
                return
            log.warning("KV event gap without replay; dropping the worker's blocks",
                        extra={"instance": feed.instance.instance_id, "expected": state.last_seq + 1, "got": seq})
            state.drop_all()
        try:
            events = events_wire.decode_batch(payload)
        except events_wire.EventDecodeError as exc:
            self.malformed += 1
            log.warning("malformed KV event batch", extra={"instance": feed.instance.instance_id,
                                                           "error": str(exc)})
            state.last_seq = seq
            return
        state.apply_batch(seq, events)

    def _request_replay(self, feed: WorkerFeed, start_seq: int, held: list[tuple[int, bytes]]) -> None:
        """Ask for the batches from ``start_seq`` on; ``held``, and the live batches that come meanwhile, wait."""
        feed.replaying = True
        feed.replay_deadline = time.monotonic() + REPLAY_TIMEOUT_S
        feed.held = held
        feed.replay.send_multipart([b"", events_wire.encode_seq(start_seq)])

    def on_replay_frames(self, feed: WorkerFeed, frames: list[bytes]) -> None:
        """One message of a replay's answer: ``[b"", seq, payload]`` (our publisher, vLLM before the topic frame)
        or ``[b"", topic, seq, payload]`` (vLLM since); the end marker has seq -1."""
        if len(frames) not in (3, 4):
            self.malformed += 1
            return
        if not feed.replaying:  # the late answer to a replay given up on: its batches are accounted for
            return
        seq_frame, payload = frames[-2], frames[-1]
        if seq_frame == events_wire.END_OF_REPLAY:
            self._finish_replay(feed)
            return
        try:
            seq = events_wire.decode_seq(seq_frame)
        except events_wire.EventDecodeError:
            self.malformed += 1
            return
        self._apply_without_replay(feed, seq, payload)  # a gap here: the engine no longer has what we missed

    def _apply_without_replay(self, feed: WorkerFeed, seq: int, payload: bytes) -> None:
        """Apply a batch whose predecessors cannot be had: past a gap, the worker's blocks start over."""
        state = feed.state
        if state.check_seq(seq) == "gap":
            state.drop_all()
            state.last_seq = seq - 1
        if state.check_seq(seq) == "next":
            self._apply(feed, seq, payload)

    def _finish_replay(self, feed: WorkerFeed) -> None:
        feed.replaying = False
        held, feed.held = feed.held, []
        for seq, payload in held:
            if feed.state.check_seq(seq) != "duplicate":
                self._apply(feed, seq, payload)

    def _give_up_replay(self, feed: WorkerFeed, why: str) -> None:
        """Treat the replay's gap as one without replay: drop the worker's blocks and follow on from the held
        batches (the blocks come back as the engine stores them again)."""
        log.warning("KV event replay given up; dropping the worker's blocks",
                    extra={"instance": feed.instance.instance_id, "reason": why})
        feed.replaying = False
        held, feed.held = feed.held, []
        state = feed.state
        state.drop_all()
        state.last_seq = None
        for seq, payload in held:
            self._apply_without_replay(feed, seq, payload)

    def expire_replays(self, now: float) -> None:
        """Give up the replays that have run past their deadline (housekeeping)."""
        for feed in self.feeds.values():
            if feed.replaying and now >= feed.replay_deadline:
                self._give_up_replay(feed, f"no end of replay within {REPLAY_TIMEOUT_S:g} s")

    def on_load_frames(self, feed: WorkerFeed, frames: list[bytes]) -> None:
        try:
            report = load_wire.decoder.decode(frames[-1])
        except msgspec.DecodeError:
            self.malformed += 1
            return
        self.writer.report_load(feed.state.slot, report.running, report.waiting, report.kv_blocks_used)

    # ---- routing decisions ---------------------------------------------------------------------------

    def on_routed(self, payload: bytes) -> None:
        try:
            routed = indexer_wire.routed_decoder.decode(payload)
        except msgspec.DecodeError:
            self.malformed += 1
            return
        feed = self.feeds.get(routed.instance_id)
        if feed is not None:
            # the index compares prediction ages across processes: every one passes time.monotonic()
            self.writer.predict(feed.state.slot, routed.seq_hashes, time.monotonic())

    def status(self) -> indexer_wire.IndexerStatus:
        workers, problems = {}, []
        for instance_id, feed in self.feeds.items():
            info = feed.state.status()
            info["kv_events"] = feed.events is not None
            if feed.load is not None:
                info["load"] = self.writer.reported_load(feed.state.slot)
            workers[instance_id] = indexer_wire.WorkerIndexStatus(**info)
            if info["block_size_mismatch"] is not None:
                problems.append(f"worker {instance_id} publishes KV events with block size "
                                f"{info['block_size_mismatch']} but its model card says "
                                f"{feed.state.block_size}: its events are ignored")
            if self.use_kv_events and feed.events is None:
                problems.append(f"worker {instance_id} advertises no KV event endpoint: KV routing "
                                f"falls back to the router's own decisions for it")
        stats = self.writer.stats()
        return indexer_wire.IndexerStatus(workers, problems, stats.get("live_entries", 0),
                                          stats.get("dropped_inserts", 0))


def run(endpoints: Endpoints, settings: RouterConfig, ready: Connection) -> None:
    """Process entry: create the shared index (sized by the daemon's ``router`` section), report READY,
    follow workers until terminated."""
    context = zmq.Context()
    # adopt: a restarted indexer takes over the segment its predecessor left (the gateways mapped it); its
    # blocks are dropped and come back with the workers' next events, its slots and load counters stay
    writer = KvIndexWriter(name=endpoints.kv_index_name, capacity_blocks=settings.kv_index_capacity_blocks,
                           max_workers=settings.kv_index_max_workers, adopt=True)
    try:
        _serve(context, writer, endpoints, settings, ready)
    finally:
        writer.close()


def _serve(context: zmq.Context, writer: KvIndexWriter, endpoints: Endpoints, settings: RouterConfig,
           ready: Connection) -> None:
    recv_from_registry = open_socket(context, zmq.SUB, subscribe=b"", connect=endpoints.registry_pub)
    recv_routed = open_socket(context, zmq.PULL, bind=endpoints.indexer_routed)
    send_status = open_socket(context, zmq.PUB, bind=endpoints.indexer_status)
    # only the kv router reads the blocks: in the other modes the indexer follows the workers' load reports only
    use_kv_events = settings.kv_events and settings.router_mode == "kv"
    indexer = Indexer(context, writer, use_kv_events=use_kv_events, ttl_s=settings.router_ttl_s,
                      pending_ttl_s=settings.router_pending_ttl_s)
    ready.send("ready")
    ready.close()
    version, next_housekeeping = -1, 0.0
    poller, by_socket = _poller(indexer, recv_from_registry, recv_routed)
    while True:  # wakes for a message, or for the housekeeping (not more often: a wake-up costs ~100 µs here)
        timeout_ms = max(0, int((next_housekeeping - time.monotonic()) * 1000) + 1)
        for sock, _ in poller.poll(timeout_ms):
            if sock is recv_from_registry:
                snapshot = _latest_snapshot(sock)
                if snapshot is not None and snapshot.version != version:
                    version = snapshot.version
                    indexer.sync(snapshot.instances)
                    poller, by_socket = _poller(indexer, recv_from_registry, recv_routed)
                    break  # sockets may have closed: read on with the new poller
            elif sock is recv_routed:
                for frames in _drain(sock):
                    indexer.on_routed(frames[-1])
            else:
                feed, handler = by_socket[sock]
                for frames in _drain(sock):
                    handler(feed, frames)
        now = time.monotonic()
        if now >= next_housekeeping:
            writer.expire_predictions(now - indexer.prediction_ttl_s)
            indexer.expire_replays(now)
            send_status.send(indexer_wire.encoder.encode(indexer.status()))
            next_housekeeping = now + STATUS_INTERVAL_S


def _poller(indexer: Indexer, *always: zmq.Socket) -> tuple[zmq.Poller, dict]:
    """A poller over ``always`` and every worker feed's sockets (rebuilt when the instance table changes), and
    each feed socket's (feed, handler)."""
    poller = zmq.Poller()
    for sock in always:
        poller.register(sock, zmq.POLLIN)
    by_socket = {}
    for feed in indexer.feeds.values():
        for sock, handler in ((feed.events, indexer.on_event_frames), (feed.replay, indexer.on_replay_frames),
                              (feed.load, indexer.on_load_frames)):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
                by_socket[sock] = (feed, handler)
    return poller, by_socket


def _drain(sock: zmq.Socket) -> list[list[bytes]]:
    """Every message queued on ``sock`` (asked with ``zmq.EVENTS``, not by a read that raises ``zmq.Again``)."""
    messages = []
    while sock.getsockopt(_EVENTS) & _POLLIN:
        messages.append(sock.recv_multipart(zmq.NOBLOCK))
    return messages


def _latest_snapshot(sock: zmq.Socket) -> registry_wire.Snapshot | None:
    latest = None
    for frames in _drain(sock):
        try:
            latest = registry_wire.snapshot_decoder.decode(frames[-1])
        except msgspec.DecodeError:
            continue
    return latest
