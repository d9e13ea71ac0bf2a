"""Plumbing every process shares: the ZeroMQ socket factory (``sockets``), the asyncio drain loop (``zmqloop``),
process helpers (``process``), and the kernel's view of a TCP connection (``tcp_diag``). It imports nothing from
the rest of the package."""
