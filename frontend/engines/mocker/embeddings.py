"""Mock embeddings: deterministic, unit-length vectors of a token sequence.

Every token has a fixed pseudo-random Gaussian direction (seeded by its id, so the same in every process);
an input's vector is the sum of its tokens' directions plus a sparse term for each pair of neighbouring
tokens (so that word order matters), normalized to unit length. The same tokens always give the same vector,
inputs that share tokens point in similar directions, and every prefix of the dimensions carries signal (for
``dimensions``), so similarity search over mock vectors behaves plausibly without any semantics.
"""

from __future__ import annotations

import functools
import math
import random
import struct
from array import array
from typing import Sequence

import xxhash

from ...worker.unary import pack_vector

BIGRAM_WEIGHT = 0.5
TOKEN_CACHE = 4096  # token directions kept (4 bytes per dimension each)


def embed_tokens(token_ids: Sequence[int], dimensions: int) -> bytes:
    """The unit vector of ``token_ids`` as little-endian float32 bytes."""
    vector = [0.0] * dimensions
    for index, token in enumerate(token_ids):
        vector = [total + value for total, value in zip(vector, _direction(token, dimensions))]
        if index:
            digest = xxhash.xxh3_64_intdigest(struct.pack("<II", token_ids[index - 1], token))
            vector[(digest >> 1) % dimensions] += BIGRAM_WEIGHT if digest & 1 else -BIGRAM_WEIGHT
    norm = math.sqrt(math.fsum(value * value for value in vector))
    if norm:
        vector = [value / norm for value in vector]
    else:  # no tokens: still a unit vector
        vector[0] = 1.0
    return pack_vector(vector)


@functools.lru_cache(maxsize=TOKEN_CACHE)
def _direction(token: int, dimensions: int) -> array:
    rng = random.Random(token)
    return array("f", (rng.gauss(0.0, 1.0) for _ in range(dimensions)))
