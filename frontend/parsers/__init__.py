"""Tool-call and reasoning parsers: model text in, ordered content / reasoning / tool-call segments out."""
