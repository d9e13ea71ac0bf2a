"""Output path: token ids from the engine to text deltas, in stages (detokenize, stop strings, parsers)."""
