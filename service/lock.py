"""The data dir's lock: a process that writes the data dir's files as their owner (`vsearch serve`, and `vsearch
restore` / `import` on the embedded engine) holds it, so two of them never work on one data dir at once."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = ".vsearch.lock"


class DataDirInUse(Exception):
    pass


class DataDirLock:
    """Held from construction until close() or the process's end (the kernel drops it, even on SIGKILL)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise DataDirInUse(
                f"another vsearch process (a server?) is using the data dir {data_dir}: stop it first"
            ) from None

    def close(self) -> None:
        os.close(self._fd)
