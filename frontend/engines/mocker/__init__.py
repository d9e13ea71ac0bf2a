"""The mock engine: a worker that simulates an LLM (timing, KV cache, events) without a model."""
