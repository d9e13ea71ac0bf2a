"""ZeroMQ plumbing every process shares: the socket factory (``sockets``), the asyncio drain loop
(``zmqloop``), and process helpers (``process``). It imports nothing from the rest of the package."""
