"""The KV indexer process: follows workers' KV events and writes the shared-memory block index."""
