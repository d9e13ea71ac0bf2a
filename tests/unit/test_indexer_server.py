"""The indexer's event sequencing: gaps, replays, restarts (frontend/indexer/server.py) over the reference index."""

from __future__ import annotations

import time

import pytest
import zmq

from frontend.indexer import server
from frontend.indexer.server import Indexer
from frontend.kv import block_hashes
from frontend.kv.index_reference import ReferenceKvIndex
from frontend.protocol import kv_events as wire, load as load_wire
from frontend.protocol.indexer import RoutedBlocks, encoder
from frontend.protocol.kv_events import BlockStored
from frontend.protocol.load import LoadReport
from frontend.protocol.registry import Instance, ModelCard

BS = 4


class FakeReplaySocket:
    def __init__(self):
        self.sent = []

    def send_multipart(self, frames):
        self.sent.append(frames)


def make_indexer(with_replay: bool):
    index = ReferenceKvIndex(capacity_blocks=1000, max_workers=4)
    indexer = Indexer(None, index, use_kv_events=False, ttl_s=120, pending_ttl_s=10)
    card = ModelCard(name="m", model_path="/unused", kv_block_size=BS)
    indexer.sync([Instance("w", "tcp://x", card)])
    feed = indexer.feeds["w"]
    if with_replay:
        feed.replay = FakeReplaySocket()
    return indexer, index, feed


def batch(seq: int, tokens: list[int], engine_hash: int, parent: int | None = None) -> list[bytes]:
    payload = wire.encode_batch(1.0, [BlockStored([engine_hash], parent, tokens, BS)])
    return [b"kv-events", wire.encode_seq(seq), payload]


def held(index: ReferenceKvIndex, slot: int, tokens: list[int]) -> bool:
    hashes = list(block_hashes(tokens, BS))
    return index.find_matches(hashes, 0.0, 0.0).get(slot, 0) == len(hashes)


def test_in_order_batches_are_applied_and_chained():
    indexer, index, feed = make_indexer(with_replay=False)
    indexer.on_event_frames(feed, batch(0, [1, 2, 3, 4], 11))
    indexer.on_event_frames(feed, batch(1, [5, 6, 7, 8], 12, parent=11))
    assert held(index, feed.state.slot, [1, 2, 3, 4, 5, 6, 7, 8])


def test_gap_without_replay_drops_the_worker_blocks():
    indexer, index, feed = make_indexer(with_replay=False)
    indexer.on_event_frames(feed, batch(0, [1, 2, 3, 4], 11))
    indexer.on_event_frames(feed, batch(5, [9, 9, 9, 9], 13))
    assert not held(index, feed.state.slot, [1, 2, 3, 4])
    assert held(index, feed.state.slot, [9, 9, 9, 9]) and feed.state.gaps == 1


def test_gap_with_replay_asks_for_the_missing_batches_and_applies_them_in_order():
    indexer, index, feed = make_indexer(with_replay=True)
    indexer.on_event_frames(feed, batch(0, [1, 2, 3, 4], 11))
    indexer.on_event_frames(feed, batch(2, [9, 10, 11, 12], 13, parent=12))  # seq 1 was lost
    assert feed.replay.sent == [[b"", wire.encode_seq(1)]]
    indexer.on_event_frames(feed, batch(3, [13, 14, 15, 16], 14, parent=13))  # held during the replay
    missing = batch(1, [5, 6, 7, 8], 12, parent=11)
    indexer.on_replay_frames(feed, [b"", missing[1], missing[2]])
    indexer.on_replay_frames(feed, [b"", wire.END_OF_REPLAY, b""])
    assert held(index, feed.state.slot, list(range(1, 17)))
    assert feed.state.last_seq == 3


def test_engine_restart_clears_the_worker():
    indexer, index, feed = make_indexer(with_replay=False)
    indexer.on_event_frames(feed, batch(0, [1, 2, 3, 4], 11))
    indexer.on_event_frames(feed, batch(1, [5, 6, 7, 8], 12, parent=11))
    indexer.on_event_frames(feed, batch(0, [7, 7, 7, 7], 21))
    assert not held(index, feed.state.slot, [1, 2, 3, 4]) and held(index, feed.state.slot, [7, 7, 7, 7])


def test_malformed_frames_are_counted_not_fatal():
    indexer, _, feed = make_indexer(with_replay=False)
    indexer.on_event_frames(feed, [b"only one frame"])
    indexer.on_event_frames(feed, [b"t", b"\x00", b"x"])
    indexer.on_event_frames(feed, [b"t", wire.encode_seq(0), b"\xc1"])
    assert indexer.malformed == 3


def test_load_reports_are_stored_and_bad_ones_counted_not_fatal():
    indexer, index, feed = make_indexer(with_replay=False)
    indexer.on_load_frames(feed, [load_wire.encoder.encode(LoadReport(3, 1, 42))])
    assert index.reported_load(feed.state.slot) == (3, 1, 42)
    for bad in (b"\xc1", load_wire.encoder.encode([2**64 - 1, 0, 0]), load_wire.encoder.encode([-1, 0, 0]),
                load_wire.encoder.encode({"running": 1})):
        indexer.on_load_frames(feed, [bad])
    assert indexer.malformed == 4 and index.reported_load(feed.state.slot) == (3, 1, 42)


def test_routed_blocks_become_predictions_and_a_leaving_worker_frees_its_slot():
    indexer, index, feed = make_indexer(with_replay=False)
    hashes = block_hashes([1, 2, 3, 4, 5, 6, 7, 8], BS).tobytes()
    indexer.on_routed(encoder.encode(RoutedBlocks("w", hashes)))
    assert index.find_matches(hashes, 0.0, 1e12) == {feed.state.slot: 2}
    indexer.sync([])
    assert index.slots() == []


# ---- catch-up on join, and replays that never end (a real ROUTER socket plays the engine) -----------------

@pytest.fixture
def joined():
    """An indexer following KV events that has just learnt of worker ``w``, and ``w``'s replay ROUTER (the test
    plays the engine behind it)."""
    context = zmq.Context()
    engine_replay = context.socket(zmq.ROUTER)
    port = engine_replay.bind_to_random_port("tcp://127.0.0.1")
    index = ReferenceKvIndex(capacity_blocks=1000, max_workers=4)
    indexer = Indexer(context, index, use_kv_events=True, ttl_s=120, pending_ttl_s=10)
    card = ModelCard(name="m", model_path="/unused", kv_block_size=BS, runtime_config={
        "kv_events_endpoint": "tcp://127.0.0.1:9", "kv_events_replay_endpoint": f"tcp://127.0.0.1:{port}"})
    indexer.sync([Instance("w", "tcp://x", card)])
    yield indexer, index, indexer.feeds["w"], engine_replay
    indexer.sync([])  # closes the feed's sockets
    engine_replay.close(0)
    context.term()


def replay_request(engine_replay: zmq.Socket) -> tuple[bytes, int]:
    assert engine_replay.poll(5000), "the indexer asked for no replay"
    identity, empty, start = engine_replay.recv_multipart()
    assert empty == b""
    return identity, wire.decode_seq(start)


def answer(indexer: Indexer, feed, reply: list[bytes]) -> None:
    assert feed.replay.poll(5000)
    indexer.on_replay_frames(feed, feed.replay.recv_multipart())


def test_a_worker_that_joins_is_asked_for_its_whole_buffer_and_live_batches_wait_for_it(joined):
    indexer, index, feed, engine_replay = joined
    identity, start = replay_request(engine_replay)
    assert start == 0 and feed.replaying
    indexer.on_event_frames(feed, batch(2, [9, 10, 11, 12], 13, parent=12))  # live, while the replay runs
    for seq, tokens, engine_hash, parent in ((0, [1, 2, 3, 4], 11, None), (1, [5, 6, 7, 8], 12, 11)):
        frames = batch(seq, tokens, engine_hash, parent)
        engine_replay.send_multipart([identity, b"", frames[1], frames[2]])
        answer(indexer, feed, frames)
    assert not held(index, feed.state.slot, list(range(1, 13)))  # the live batch waits for the end of the replay
    engine_replay.send_multipart([identity, b"", wire.END_OF_REPLAY, b""])
    answer(indexer, feed, [])
    assert held(index, feed.state.slot, list(range(1, 13))) and feed.state.last_seq == 2
    assert not feed.replaying and feed.held == []


def test_vllms_replay_answer_with_its_topic_frame_is_understood(joined):
    """vLLM answers ``[identity, b"", topic, seq, payload]`` and ends with ``[identity, b"", b"", -1, b""]``."""
    indexer, index, feed, engine_replay = joined
    identity, start = replay_request(engine_replay)
    frames = batch(0, [1, 2, 3, 4], 11)
    engine_replay.send_multipart([identity, b"", b"kv-events", frames[1], frames[2]])
    answer(indexer, feed, frames)
    engine_replay.send_multipart([identity, b"", b"", wire.END_OF_REPLAY, b""])
    answer(indexer, feed, frames)
    assert held(index, feed.state.slot, [1, 2, 3, 4]) and not feed.replaying and indexer.malformed == 0


def test_a_replay_that_never_ends_is_given_up_and_the_live_batches_go_on(joined):
    indexer, index, feed, engine_replay = joined  # the engine takes the request and never answers
    replay_request(engine_replay)
    indexer.on_event_frames(feed, batch(7, [1, 2, 3, 4], 11))
    indexer.expire_replays(time.monotonic())
    assert feed.replaying  # not yet: the engine has REPLAY_TIMEOUT_S to answer
    indexer.expire_replays(time.monotonic() + server.REPLAY_TIMEOUT_S + 0.1)
    assert not feed.replaying and feed.held == []
    assert held(index, feed.state.slot, [1, 2, 3, 4]) and feed.state.last_seq == 7
    late = batch(0, [5, 5, 5, 5], 21)
    indexer.on_replay_frames(feed, [b"", late[1], late[2]])  # the answer, too late: ignored
    assert not held(index, feed.state.slot, [5, 5, 5, 5]) and feed.state.last_seq == 7


def test_live_batches_held_during_a_replay_are_bounded(joined, monkeypatch):
    monkeypatch.setattr(server, "MAX_HELD_BATCHES", 3)
    indexer, index, feed, engine_replay = joined
    replay_request(engine_replay)
    for seq in range(4):
        indexer.on_event_frames(feed, batch(10 + seq, [seq] * BS, 100 + seq))
    assert not feed.replaying and feed.held == [] and feed.state.last_seq == 13
    assert all(held(index, feed.state.slot, [seq] * BS) for seq in range(4))


def test_a_malformed_replay_frame_is_counted_not_fatal(joined):
    indexer, index, feed, engine_replay = joined
    replay_request(engine_replay)
    for frames in ([b"", b"\x00" * 7, b"x"], [b"", wire.encode_seq(0), b"\xc1"], [b"only"], [b""] * 5):
        indexer.on_replay_frames(feed, frames)
    assert indexer.malformed == 4 and feed.replaying
