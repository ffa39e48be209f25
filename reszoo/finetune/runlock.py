"""One run at a time in a run folder: a file lock on ``<out>/.lock`` held for the whole run.

Two runs writing one ``--out`` interleave their files (one run's ``run.json``, the other's
weights) and one of them crashes. The first run takes the lock without waiting; a second one
fails at once with :class:`RunInUseError` naming the holder's pid. The lock is the kernel's
(``flock`` through ``filelock``): a killed run leaves no stale lock behind. The holder's pid is
written beside it (``.lock.pid``), since a failed attempt may truncate the lock file itself.

Under accelerate/torchrun only the main process takes the lock; it tells the other processes
what happened through a broadcast over the process group, so every process fails the same way
(and none waits at a barrier for a main process that already gave up).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .options import RunExistsError, RunInUseError

__all__ = ["LOCK_FILE", "OWNER_FILE", "LOCK_FILES", "RunLock", "locked_run_folder"]

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.pid"
LOCK_FILES = frozenset({LOCK_FILE, OWNER_FILE})  # not a run's files: a folder holding only these is empty


class RunLock:
    """The lock of one run folder, taken without waiting.

    A folder that did not exist is created to hold the lock, and removed again on release when
    nothing but the lock files is in it (a run that failed its checks leaves nothing behind).
    """

    def __init__(self, folder: Path) -> None:
        from filelock import FileLock

        self.folder = folder
        self.created = False
        self._lock = FileLock(str(folder / LOCK_FILE), timeout=0)

    def acquire(self) -> None:
        """Take the lock, or raise RunInUseError (another run holds it) / RunExistsError (no folder)."""
        from filelock import Timeout

        if self.folder.exists() and not self.folder.is_dir():
            return  # not a folder: the run's own checks say so; there is nothing to lock
        try:
            self.created = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            raise RunInUseError(f"run folder {self.folder} is in use by another run ({self._holder()}); wait for it "
                                "to finish or stop it, or choose another --out") from None
        except OSError as err:
            raise RunExistsError(f"cannot lock the run folder {self.folder}: {err.strerror or err}; "
                                 "choose a folder you can write to") from err
        try:
            (self.folder / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")
        except OSError:
            pass  # only the message of a second run names the holder with it

    def _holder(self) -> str:
        try:
            pid, _, host = (self.folder / OWNER_FILE).read_text(encoding="utf-8").strip().partition(" ")
        except OSError:
            return "pid unknown"
        here = host in ("", socket.gethostname())
        return f"pid {pid}" + ("" if here else f" on {host}")

    def release(self) -> None:
        """Release the lock (the pid first, while it is still ours; the lock file stays: removing
        it could let two runs lock two files of one name), and remove a folder this lock created
        if nothing else is in it."""
        if not self._lock.is_locked:
            return
        (self.folder / OWNER_FILE).unlink(missing_ok=True)
        self._lock.release()
        if self.created and {p.name for p in self.folder.iterdir()} <= LOCK_FILES:
            try:
                (self.folder / LOCK_FILE).unlink(missing_ok=True)
                self.folder.rmdir()
            except OSError:
                pass  # another run created something meanwhile: it is theirs


@contextmanager
def locked_run_folder(folder: Path, state: Any) -> Iterator[None]:
    """Hold ``folder``'s lock in the main process of ``state`` (accelerate's ``PartialState``)
    for the block; every process raises the main process's error when it cannot be taken."""
    lock = None
    error: Exception | None = None
    if state.is_main_process:
        try:  # whatever goes wrong, the other processes must hear of it, not wait for the main one
            lock = RunLock(folder)
            lock.acquire()
        except Exception as err:
            error = err
    if state.num_processes > 1:  # the other processes learn the outcome from the main one
        from accelerate.utils import broadcast_object_list

        message = [None if error is None else (type(error).__name__, str(error))]
        broadcast_object_list(message, from_process=0)
        if message[0] is not None and error is None:
            kind, text = message[0]
            error = RunInUseError(text) if kind == RunInUseError.__name__ else RunExistsError(text)
    if error is not None:
        raise error
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
