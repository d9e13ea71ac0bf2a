"""Block hashes (native/blockhash.pyx) against the xxhash package, computed in pure Python here."""

from __future__ import annotations

import array
import random
import struct

import pytest
import xxhash

from frontend.kv import block_hashes, chain, chain_hashes, local_block_hashes, sequence_hash
from frontend.kv import index_reference as ref


def xxh3(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data, seed=1337)


def expected(tokens: list[int], block_size: int) -> tuple[list[int], list[int]]:
    """Dynamo's definition, spelled out: local per full block, then chained 16-byte hashes."""
    local = [xxh3(struct.pack(f"<{block_size}I", *tokens[i:i + block_size]))
             for i in range(0, len(tokens) - block_size + 1, block_size)]
    seq: list[int] = []
    for i, h in enumerate(local):
        seq.append(h if i == 0 else xxh3(struct.pack("<QQ", seq[-1], h)))
    return local, seq


@pytest.mark.parametrize("block_size", [1, 2, 3, 16, 32, 64, 100])
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 64, 257, 1000])
def test_matches_xxhash(block_size, length):
    rng = random.Random(block_size * 10_000 + length)
    tokens = [rng.randrange(2**32) for _ in range(length)]
    local, seq = expected(tokens, block_size)
    assert list(local_block_hashes(tokens, block_size)) == local
    assert list(block_hashes(tokens, block_size)) == seq
    assert ref.local_block_hashes(tokens, block_size) == local
    assert ref.block_hashes(tokens, block_size) == seq


def test_known_vector():
    # One full block of 0..15 and a partial block that must be ignored.
    tokens = list(range(20))
    local = xxh3(b"".join(struct.pack("<I", t) for t in range(16)))
    assert list(block_hashes(tokens, 16)) == [local]
    assert list(local_block_hashes(tokens, 16)) == [local]


def test_result_is_u64_array():
    out = block_hashes(list(range(64)), 16)
    assert isinstance(out, array.array) and out.typecode == "Q" and len(out) == 4
    assert array.array("Q", out.tobytes()) == out


def test_input_kinds_agree():
    rng = random.Random(7)
    tokens = [rng.randrange(200_000) for _ in range(300)]
    want = list(block_hashes(tokens, 16))
    packed = array.array("I", tokens)
    for kind in (tuple(tokens), packed, array.array("i", tokens), memoryview(packed), packed.tobytes(),
                 bytearray(packed.tobytes()), iter(tokens), range(0)):
        got = list(block_hashes(kind, 16))
        assert got == (want if not isinstance(kind, range) else [])


def test_token_extremes_and_int_like_items():
    tokens = [0, 2**32 - 1, 2**30, 2**31, True, 5] * 8
    _, seq = expected([int(t) for t in tokens], 8)
    assert list(block_hashes(tokens, 8)) == seq


@pytest.mark.parametrize("bad, error", [([-1] * 16, OverflowError), ([2**32] * 16, OverflowError),
                                        ([1.5] * 16, TypeError), (["1"] * 16, TypeError)])
def test_bad_tokens(bad, error):
    with pytest.raises(error):
        block_hashes(bad, 16)


def test_bad_buffers_and_block_size():
    with pytest.raises(TypeError):
        block_hashes(array.array("Q", range(32)), 16)  # 8-byte items are not token ids
    with pytest.raises(TypeError):
        block_hashes(array.array("H", range(32)), 16)
    with pytest.raises(TypeError):
        block_hashes(b"abc", 1)  # not a whole number of u32
    with pytest.raises(ValueError):
        block_hashes([1, 2, 3], 0)
    with pytest.raises(TypeError):
        block_hashes(12, 4)


def test_chain_continues_a_sequence():
    rng = random.Random(3)
    tokens = [rng.randrange(50_000) for _ in range(16 * 10)]
    local = list(local_block_hashes(tokens, 16))
    seq = list(block_hashes(tokens, 16))
    assert list(chain(None, local)) == seq
    assert list(chain_hashes(None, array.array("Q", local))) == seq
    for k in range(1, 10):
        assert list(chain(seq[k - 1], local[k:])) == seq[k:]
        assert ref.chain(seq[k - 1], local[k:]) == seq[k:]
    assert list(chain(None, [])) == [] and list(chain(5, [])) == []
    assert sequence_hash(seq[0], local[1]) == seq[1] == ref.sequence_hash(seq[0], local[1])
    assert list(chain(0, [2**64 - 1])) == [xxh3(struct.pack("<QQ", 0, 2**64 - 1))]
    with pytest.raises(OverflowError):
        chain(None, [-1])
