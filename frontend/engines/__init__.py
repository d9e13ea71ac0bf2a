"""Engines built on the worker SDK (frontend/worker/): the mock engine, the embedding worker, vLLM."""
