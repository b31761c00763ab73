"""The server's listening socket, and how many connections it may hold open.

Kept apart from the HTTP code: both are about sockets and the process's file descriptor limit
(which pqd's cycles share), not about requests.
"""

from __future__ import annotations

import errno
import resource
import socket
from typing import Final

__all__ = ["connection_budget", "listening_socket"]

# fds left for everything else in the process (cycles start pools, pipes and a Manager).
_FD_HEADROOM_MIN: Final = 128


def connection_budget(wanted: int) -> int:
    """At most ``wanted`` connections, and never so many that the rest of pqd runs out of fds."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    headroom = max(_FD_HEADROOM_MIN, soft // 4)
    return max(8, min(wanted, soft - headroom))


def listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking socket listening on ``host`` (empty: every interface) and ``port``."""
    dual_stack = not host
    if not host:
        host = "::" if socket.has_ipv6 else "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as err:
        if dual_stack and family == socket.AF_INET6 and err.errno == errno.EAFNOSUPPORT:
            return listening_socket("0.0.0.0", port)  # IPv6 switched off in the kernel
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack and family == socket.AF_INET6:
            # One socket for IPv4 and IPv6, as Go's listeners (and so node_exporter's) do.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
