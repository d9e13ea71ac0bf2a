"""One request's life in a gateway process: preparation, generation, unary calls, disconnects, nvext."""
