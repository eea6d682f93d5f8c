"""A free TCP port on 127.0.0.1, for servers that tests start (the kernel picks it)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free on 127.0.0.1 now; another process may take it before the caller binds (rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
