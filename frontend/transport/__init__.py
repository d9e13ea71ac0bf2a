"""ZeroMQ plumbing every process shares (socket drain loops) and process helpers."""
