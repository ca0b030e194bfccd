"""The lock a process holds while it downloads into an hour store (web, Celery workers, ``amplitude-sync``)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path


class LockTimeout(Exception):
    """The store lock stayed held by another process for the whole wait."""

    def __init__(self, holder: dict) -> None:
        self.holder = holder
        who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
        super().__init__(f"the hour store is being filled by {who}")


class StoreLock:
    """Mutual exclusion of the processes downloading into one store (web, Celery workers, ``amplitude-sync``).

    What a lock *is* stays here; how it is *held* is the subclass's: a local or shared POSIX file system uses
    :class:`FileStoreLock`, an object-storage store would hold a lease object instead. The policy is the same:
    waiting polls until a deadline, the holder's identity (host, pid, since when) is readable for messages, and a
    holder that crashes cannot keep the lock.
    """

    poll_s = 0.1

    def acquire(self, timeout: float | None = None) -> None:
        """Wait for the lock, at most ``timeout`` seconds (None: as long as it takes); else :class:`LockTimeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._try_hold():
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(self.holder())
            time.sleep(self.poll_s)

    def release(self) -> None:
        self._let_go()

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @staticmethod
    def identity() -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": datetime.now(UTC).isoformat()}

    # --- how it is held (per backend) ---------------------------------------------------------------
    def _try_hold(self) -> bool:
        raise NotImplementedError

    def _let_go(self) -> None:
        raise NotImplementedError

    def holder(self) -> dict:
        raise NotImplementedError


class FileStoreLock(StoreLock):
    """An exclusive ``flock`` on a lock file. The kernel drops it when its holder exits or crashes (even with
    SIGKILL), so a stale holder never blocks the store; the file's content only names the holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _try_hold(self) -> bool:
        if self._fd is not None:
            raise RuntimeError("this lock is already held")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.identity()).encode(), 0)
        self._fd = fd
        return True

    def _let_go(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (FileNotFoundError, ValueError):
            return {}
