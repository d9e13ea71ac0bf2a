"""KV-aware routing primitives: Dynamo-compatible block hashes and the shared-memory KV block index.

Both are native (Cython sources in ``native/``, built into this package as ``frontend.kv.blockhash`` and
``frontend.kv.kvindex``); ``frontend.kv.index_reference`` holds their pure-Python twins.
"""

try:
    from frontend.kv.blockhash import XXH3_SEED, block_hashes, chain, local_block_hashes, sequence_hash
    from frontend.kv.kvindex import KvIndexReader, KvIndexWriter, remove_stale_segments
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        f"frontend.kv needs its native extensions, which are not built or do not load ({exc}). "
        "Build them from the repository root with `.venv/bin/pip install -e .` (needs gcc and Python's "
        "headers; pip fetches Cython), or rebuild in place after editing native/*.pyx with "
        "`.venv/bin/python setup.py build_ext --inplace`."
    ) from exc

chain_hashes = chain  # the name frontend/indexer uses

__all__ = [
    "XXH3_SEED",
    "KvIndexReader",
    "KvIndexWriter",
    "block_hashes",
    "chain",
    "chain_hashes",
    "local_block_hashes",
    "remove_stale_segments",
    "sequence_hash",
]
