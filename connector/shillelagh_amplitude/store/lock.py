"""The lock a process holds while it downloads into an hour store (web, Celery workers, ``amplitude-sync``).

The policy: a lease renewed by its holder, and a bounded wait.

- The holder renews its lease every :data:`RENEW_S` seconds from a thread of its own, for as long as it holds the
  lock. A holder that exits or crashes loses the lock at once (the kernel drops a ``flock``).
- A waiter gives up, with :class:`LockTimeout` naming the holder (host, pid, since when), at the first of:
  its own ``timeout`` (a web query's download budget); :data:`MAX_WAIT_S` (a sync, the CLI or a Celery task,
  which have no budget); or the holder's lease going unrenewed for :data:`STALE_AFTER_S` (the holder is alive
  but stopped or hung: SIGSTOP, a frozen container, swapping).
- A waiter never takes a lock away from its holder: two processes then never download one hour at once. It
  leaves the store as it was, and the next scheduled run tries again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from ..errors import AmplitudeFault

#: How often a holder renews its lease.
RENEW_S = 2.0
#: A lease unrenewed this long means its holder is stopped or hung: waiting on is pointless.
STALE_AFTER_S = 15.0
#: The longest a caller without a budget waits for a live holder (within the background sync's 15 minutes).
MAX_WAIT_S = 600.0


class LockTimeout(AmplitudeFault):
    """The store lock stayed held by another process for the whole wait (nothing was downloaded)."""

    def __init__(self, where: str, holder: dict, waited: float, unrenewed: float | None) -> None:
        self.holder, self.waited, self.unrenewed = holder, waited, unrenewed
        who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
        since = f" since {holder['since']}" if holder.get("since") else ""
        stale = (f" (its lock has not been renewed for {unrenewed:.0f} s: the process is stopped or hung)"
                 if unrenewed is not None else "")
        #: The holder, for messages that say why a wait ended.
        self.holding = f"{who}, filling the store{since}{stale}"
        super().__init__(f"The hour store {where} is being filled by {who}{since}{stale}; this run gave up after "
                         f"waiting {waited:.0f} s, downloaded nothing, and the next run will try again.")


class StoreLock:
    """Mutual exclusion of the processes downloading into one store (web, Celery workers, ``amplitude-sync``).

    What a lock *is* stays here; how it is *held* is the subclass's: a local or shared POSIX file system uses
    :class:`FileStoreLock`, an object-storage store would hold a lease object instead. The policy is the same
    (see the module docstring): a lease renewed by its holder, a bounded wait, the holder's identity (host, pid,
    since when) readable for messages, and a holder that crashes cannot keep the lock.
    """

    poll_s = 0.1
    renew_s = RENEW_S
    stale_after_s = STALE_AFTER_S

    def __init__(self, where: str) -> None:
        self.where = where
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()

    def acquire(self, timeout: float | None = None) -> None:
        """Wait for the lock, at most ``timeout`` seconds (None: :data:`MAX_WAIT_S`), and no longer than the
        holder keeps renewing its lease; else :class:`LockTimeout`."""
        started, waiting_since = time.monotonic(), time.time()
        deadline = started + (MAX_WAIT_S if timeout is None else timeout)
        while not self._try_hold():
            now = time.monotonic()
            renewed = self._renewed_at()
            # a new holder gets a full lease from when this wait began, before its first renewal is looked at
            stale = time.time() - max(renewed, waiting_since) >= self.stale_after_s
            if stale or now >= deadline:
                raise LockTimeout(self.where, self.holder(), now - started, time.time() - renewed if stale else None)
            time.sleep(self.poll_s)
        self._stop.clear()
        self._renewer = threading.Thread(target=self._keep_renewing, name="amplitude-store-lease", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        if self._renewer is not None:
            self._stop.set()
            self._renewer.join()
            self._renewer = None
        self._let_go()

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _keep_renewing(self) -> None:
        while not self._stop.wait(self.renew_s):
            self._renew()

    @staticmethod
    def identity() -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}

    # --- how it is held (per backend) ---------------------------------------------------------------
    def _try_hold(self) -> bool:
        raise NotImplementedError

    def _renew(self) -> None:
        raise NotImplementedError

    def _renewed_at(self) -> float:
        """When the holder last renewed its lease (epoch seconds)."""
        raise NotImplementedError

    def _let_go(self) -> None:
        raise NotImplementedError

    def holder(self) -> dict:
        raise NotImplementedError


class FileStoreLock(StoreLock):
    """An exclusive ``flock`` on a lock file. The kernel drops it when its holder exits or crashes (even with
    SIGKILL), so a dead holder never blocks the store; the file's content names the holder, its modification
    time is the lease."""

    def __init__(self, path: Path, where: str) -> None:
        super().__init__(where)
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
        os.pwrite(fd, json.dumps(self.identity()).encode(), 0)  # also renews the lease (the file's mtime)
        self._fd = fd
        return True

    def _renew(self) -> None:
        os.utime(self._fd)

    def _renewed_at(self) -> float:
        try:
            return os.stat(self.path).st_mtime
        except FileNotFoundError:
            return time.time()

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
