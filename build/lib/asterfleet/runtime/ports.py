"""Free loopback ports for the processes asterfleet starts (lab and tests)."""

import socket


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now on ``host`` for ``kind``."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def free_port_both(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port free for both TCP and UDP (SIP listens on both)."""
    for _ in range(attempts):
        port = free_port(socket.SOCK_DGRAM, host)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, port))
            return port
        except OSError:
            continue
    raise OSError(f"no port free for both TCP and UDP on {host} after {attempts} tries")
