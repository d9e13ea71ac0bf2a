"""How /v1/embeddings cuts a batch across workers and post-processes vectors (frontend/http/embeddings.py)."""

from __future__ import annotations

import math
from array import array

import pytest

from frontend.http.embeddings import MIN_CHUNK_INPUTS, _vector, split_batch
from frontend.protocol.errors import InvalidRequest


def _covers(chunks: list[tuple[int, int]], count: int) -> bool:
    """Non-empty chunks, back to back, from 0 to ``count``."""
    starts = [start for start, _ in chunks] + [count]
    return starts[0] == 0 and all(start < end == starts[i + 1] for i, (start, end) in enumerate(chunks))


@pytest.mark.parametrize("count, workers, expected_chunks", [
    (1, 4, 1), (MIN_CHUNK_INPUTS, 4, 1), (MIN_CHUNK_INPUTS + 1, 4, 2), (40, 2, 2), (40, 8, 5), (2048, 3, 3),
    (100, 1, 1),
])
def test_chunk_count_and_coverage(count, workers, expected_chunks):
    chunks = split_batch([5] * count, workers)
    assert len(chunks) == expected_chunks
    assert _covers(chunks, count)


def test_chunks_balance_tokens_not_inputs():
    lengths = [100] + [1] * 99  # one long input and many short ones
    first, second = split_batch(lengths, 2)
    assert first == (0, 1) and second == (1, 100)


def test_every_chunk_gets_at_least_one_input_even_when_one_input_dominates():
    chunks = split_batch([1, 1, 1, 1, 1, 1, 1, 1, 1, 1000] + [1] * 20, 3)
    assert len(chunks) == 3 and _covers(chunks, 30)


def _raw(values: list[float]) -> bytes:
    return array("f", values).tobytes()


def test_vector_untouched_without_dimensions():
    assert list(_vector(_raw([0.6, 0.8]), None)) == pytest.approx([0.6, 0.8])


def test_dimensions_truncates_and_normalizes():
    vector = _vector(_raw([0.3, 0.4, 0.5, math.sqrt(0.5)]), 2)
    assert list(vector) == pytest.approx([0.6, 0.8])


def test_dimensions_larger_than_the_vector_is_a_400():
    with pytest.raises(InvalidRequest) as info:
        _vector(_raw([1.0, 0.0]), 3)
    assert info.value.param == "dimensions"


def test_a_zero_prefix_stays_zero():
    assert list(_vector(_raw([0.0, 0.0, 1.0]), 2)) == [0.0, 0.0]
