"""An OpenAI-compatible LLM inference frontend: Granian HTTP workers, a tokenizer pool and a worker SDK."""

__version__ = "0.1.0"
