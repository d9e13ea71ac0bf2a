"""Wire types: one msgspec module per channel (engine, registry, tokenizer) plus the public OpenAI API types."""
