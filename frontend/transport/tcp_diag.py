"""How many bytes the peer of a TCP connection has acknowledged, asked of the Linux kernel (``sock_diag``).

Granian writes a streamed response through an unbounded channel: ``send_bytes`` returns before the client has
read anything, so the application cannot see a slow reader. The kernel can: ``tcp_info.tcpi_bytes_acked`` of
the connection counts the bytes the client's TCP stack has received. :class:`TcpDiag` asks for it with one
netlink round trip (about 8 µs), looking the connection up by its two addresses. The lookup needs the local
address; a server bound to a wildcard address (``0.0.0.0``, ``::``) gets it from the route to the client
(:func:`local_address`), which is the address the kernel answered from.

Linux only: elsewhere, or where netlink is not permitted, :func:`open_tcp_diag` returns None.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from typing import NamedTuple

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
INET_DIAG_INFO = 2  # the attribute that carries struct tcp_info
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
TCP_ESTABLISHED = 1  # a connection in another state (CLOSE_WAIT: the peer closed it) counts as gone
TCP_INFO_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in struct tcp_info (Linux >= 4.1)
NLMSG_HEADER = struct.Struct("=IHHII")
INET_DIAG_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
INET_DIAG_MSG_SIZE = 72
ATTRIBUTE_HEADER = struct.Struct("=HH")
BYTES_ACKED = struct.Struct("=Q")
ROUTE_CACHE_SIZE = 1024  # client hosts whose local address is remembered (wildcard binds)


class TcpConnection(NamedTuple):
    """The two ends of an accepted TCP connection, as the kernel indexes it."""

    family: int
    local: bytes  # packed address (4 or 16 bytes)
    local_port: int
    remote: bytes
    remote_port: int


def split_host_port(address: str) -> tuple[str, int] | None:
    """``"1.2.3.4:80"`` or ``"[::1]:80"`` -> (host, port); None for anything else (a unix socket path)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


@functools.lru_cache(maxsize=4096)  # a server sees few distinct addresses; parsing one costs microseconds
def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket: the kernel finds it by its IPv4 addresses
    return ip


class TcpDiag:
    """One process's netlink socket for ``sock_diag`` queries; blocking calls, each a few microseconds."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sequence = 0
        self._routes: dict[str, bytes] = {}

    def connection(self, server: str, client: str) -> TcpConnection | None:
        """The connection of a request, from the server's bound address and the client's (Granian's
        ``scope.server`` and ``scope.client``); None when they are not TCP addresses."""
        server_end, client_end = split_host_port(server), split_host_port(client)
        if server_end is None or client_end is None:
            return None
        local_ip, remote_ip = _ip(server_end[0]), _ip(client_end[0])
        if local_ip is None or remote_ip is None:
            return None
        if local_ip.is_unspecified or local_ip.version != remote_ip.version:
            local = self.local_address(remote_ip)
            if local is None:
                return None
        else:
            local = local_ip.packed
        family = socket.AF_INET if remote_ip.version == 4 else socket.AF_INET6
        return TcpConnection(family, local, server_end[1], remote_ip.packed, client_end[1])

    def local_address(self, remote: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes | None:
        """The address this host sends to ``remote`` from (a UDP socket's route lookup; nothing is sent)."""
        key = str(remote)
        known = self._routes.get(key)
        if known is not None:
            return known
        family = socket.AF_INET if remote.version == 4 else socket.AF_INET6
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((key, 9))
                local = ipaddress.ip_address(probe.getsockname()[0].split("%", 1)[0]).packed
        except OSError:
            return None
        if len(self._routes) >= ROUTE_CACHE_SIZE:
            self._routes.clear()
        self._routes[key] = local
        return local

    def bytes_acked(self, connection: TcpConnection) -> int | None:
        """Bytes the peer has acknowledged on ``connection`` since it opened; None when the kernel has no such
        established connection (either end closed it) or did not answer."""
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        pad = bytes(16 - len(connection.local))
        socket_id = (struct.pack("!HH", connection.local_port, connection.remote_port) + connection.local + pad
                     + connection.remote + pad + struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
        request = INET_DIAG_REQ.pack(connection.family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0,
                                     0xFFFFFFFF) + socket_id
        header = NLMSG_HEADER.pack(NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST,
                                   self._sequence, 0)
        try:
            self._sock.send(header + request)
            reply = self._sock.recv(8192)
        except OSError:
            return None
        return _bytes_acked_of(reply)

    def close(self) -> None:
        self._sock.close()


def _bytes_acked_of(reply: bytes) -> int | None:
    if len(reply) < NLMSG_HEADER.size:
        return None
    length, kind, _, _, _ = NLMSG_HEADER.unpack_from(reply)
    if kind != SOCK_DIAG_BY_FAMILY or len(reply) < NLMSG_HEADER.size + INET_DIAG_MSG_SIZE:
        return None  # NLMSG_ERROR: no such socket
    if reply[NLMSG_HEADER.size + 1] != TCP_ESTABLISHED:  # inet_diag_msg.idiag_state
        return None
    offset = NLMSG_HEADER.size + INET_DIAG_MSG_SIZE
    end = min(length, len(reply))
    while offset + ATTRIBUTE_HEADER.size <= end:
        size, attribute = ATTRIBUTE_HEADER.unpack_from(reply, offset)
        if size < ATTRIBUTE_HEADER.size:
            return None
        if attribute == INET_DIAG_INFO:
            if size < ATTRIBUTE_HEADER.size + TCP_INFO_BYTES_ACKED + BYTES_ACKED.size:
                return None  # a kernel older than 4.1
            return BYTES_ACKED.unpack_from(reply, offset + ATTRIBUTE_HEADER.size + TCP_INFO_BYTES_ACKED)[0]
        offset += (size + 3) & ~3
    return None


def open_tcp_diag() -> TcpDiag | None:
    """A ``sock_diag`` socket, or None where the platform or its policy has none."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except (AttributeError, OSError):
        return None
    sock.settimeout(1.0)  # the kernel answers at once; never hang a worker on it
    return TcpDiag(sock)
