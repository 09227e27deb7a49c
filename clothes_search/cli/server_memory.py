"""The resident memory of a Milvus server running on this machine (for the benchmarks' tables).

Found from its listening port: the process that owns the socket, then every process of its process
group (the standalone is a launcher and the ``milvus`` binary). Linux ``/proc`` only; ``None`` when
the server is not local or cannot be seen.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _owner(inodes: set[str]) -> int | None:
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in targets for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    return None


def server_rss_mib(uri: str) -> float | None:
    """Resident memory (MiB) of the process group serving ``uri``, if it runs here."""
    parts = urlsplit(uri)
    if parts.hostname not in _LOCAL_HOSTS or parts.port is None:
        return None
    pid = _owner(_listening_inodes(parts.port))
    if pid is None:
        return None
    group = os.getpgid(pid)
    total_kib = 0
    for other in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(other)) != group:
                continue
            for line in Path(f"/proc/{other}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total_kib / 1024
