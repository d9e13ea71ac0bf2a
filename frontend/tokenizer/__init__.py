"""Tokenizer process: chat-template rendering and tokenization of requests."""
