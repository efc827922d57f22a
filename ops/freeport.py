#!/usr/bin/env python3
"""Print N free TCP ports on 127.0.0.1, one per line: ``freeport.py [N]``.

Ports are drawn at random from below the kernel's ephemeral range (so an outgoing connection
cannot grab one between this check and the server binding it) and each one is checked by
binding it. Random choice makes two concurrent `make test` runs very unlikely to pick the same
port; the servers fail loudly on a clash anyway. Standard library only.
(tests/integration/servers.py has the same logic as ``free_port()`` for per-test servers.)
"""

from __future__ import annotations

import random
import socket
import sys

HOST = "127.0.0.1"


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    low, high = 20000, max(20000 + 1000, _ephemeral_low() - 1)
    rng = random.SystemRandom()
    ports: list[int] = []
    for _ in range(10000):
        port = rng.randint(low, high)
        if port not in ports and _bindable(port):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise SystemExit(f"freeport: could not find {n} free ports in {low}-{high}")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print("\n".join(str(p) for p in free_ports(count)))
