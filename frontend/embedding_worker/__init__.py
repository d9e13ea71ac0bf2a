"""`python -m frontend.embedding_worker`: the embedding worker (frontend/engines/embedding/)."""
