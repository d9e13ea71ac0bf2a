"""The mock engine's paged KV cache (frontend/engines/mocker/kv_cache.py)."""

import pytest

from frontend.engines.mocker.kv_cache import CacheFull, KvCache, SequenceBlocks


class RecordingPublisher:
    def __init__(self):
        self.events = []

    def stored(self, hashes, parent, tokens, block_size):
        self.events.append(("stored", list(hashes), parent, list(tokens), block_size))

    def removed(self, hashes):
        self.events.append(("removed", list(hashes)))


def run_prompt(cache, tokens):
    seq = SequenceBlocks(tokens)
    cached = cache.admit(seq)
    cache.commit(seq, len(tokens))
    return seq, cached


def test_second_request_hits_the_shared_prefix():
    cache = KvCache(64, 4, RecordingPublisher())
    first, cached = run_prompt(cache, list(range(10)))
    assert cached == 0
    cache.release(first)
    second, cached = run_prompt(cache, list(range(8)) + [99, 98, 97])
    assert cached == 8


def test_stored_events_chain_and_carry_tokens():
    publisher = RecordingPublisher()
    cache = KvCache(64, 4, publisher)
    seq, _ = run_prompt(cache, list(range(8)))
    (kind, hashes, parent, tokens, size), = publisher.events
    assert (kind, parent, tokens, size) == ("stored", None, list(range(8)), 4)
    assert hashes == seq.hashes
    cache.append(seq, 100)
    for token in (101, 102, 103):
        cache.append(seq, token)
    cache.commit(seq, 12)
    assert publisher.events[-1][:4] == ("stored", [seq.hashes[2]], seq.hashes[1], [100, 101, 102, 103])


def test_lru_eviction_publishes_removal():
    publisher = RecordingPublisher()
    cache = KvCache(3, 4, publisher)
    a, _ = run_prompt(cache, [1, 2, 3, 4])
    cache.release(a)
    b, _ = run_prompt(cache, [5, 6, 7, 8, 9, 10, 11, 12, 13])  # 3 blocks: 2 free ones, then a's cached one
    assert ("removed", [a.hashes[0]]) in publisher.events
    assert cache.cached_prefix(a.hashes) == 0


def test_blocks_in_use_are_never_evicted():
    cache = KvCache(2, 4, RecordingPublisher())
    a, _ = run_prompt(cache, [1, 2, 3, 4])
    with pytest.raises(CacheFull):
        run_prompt(cache, [9, 9, 9, 9, 9])
    assert cache.cached_prefix(a.hashes) == 1


def test_release_returns_blocks():
    cache = KvCache(8, 4)
    seq, _ = run_prompt(cache, list(range(9)))
    assert cache.used_blocks == 3
    cache.release(seq)
    assert cache.used_blocks == 0 and cache.free_blocks == 8
