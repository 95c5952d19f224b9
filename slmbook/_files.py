"""Writing files without losing anything: the machinery under :mod:`slmbook.checkpoints`.

* :func:`atomic_write` writes a temporary file next to the target, flushes it
  to disk and renames it over the target, keeping the target's permissions
  and writing through a symbolic link to the file it points to.
* :func:`remove_stale_temps` deletes the temporary files that killed
  processes (SIGKILL, power cut) left behind.
* :func:`locked` keeps two runs from writing the same checkpoint in turn.
* :func:`check_free_space` fails before training, not after it, when the
  disk cannot hold the checkpoint.

Hidden helper names (``.NAME.<tag>``) shorten a long ``NAME`` so that they
stay within the usual 255-byte limit of a file name, whatever the name.

See chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "check_free_space", "hidden_name", "locked", "remove_stale_temps"]

_NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_TEMP = re.compile(r"(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")


def hidden_name(path: Path, tag: str) -> Path:
    """``path``'s hidden sibling ``.NAME.tag``, NAME cut so that the name fits in 255 bytes.

    >>> hidden_name(Path("runs/model.pt"), "lock").as_posix()
    'runs/.model.pt.lock'
    """
    room = _NAME_MAX - len(tag.encode()) - 2
    name = path.name.encode()[:room].decode(errors="ignore")
    return path.parent / f".{name}.{tag}"


def resolve_link(path: Path) -> Path:
    """The file a symbolic link points to (followed to the end), or ``path`` itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return False
    return True


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(file)`` so that a crash leaves the old file untouched.

    Returns the file actually written (the target of a symbolic link).
    """
    target = resolve_link(path)
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else None
    remove_stale_temps(target)
    tmp = hidden_name(target, f"{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)  # an overwritten file keeps its permissions
        os.replace(tmp, target)  # atomic on POSIX and Windows
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete ``path``'s temporary files whose writing process no longer runs; return them."""
    prefix = hidden_name(path, "").name
    removed = []
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = entry.name.startswith(prefix) and _TEMP.fullmatch(entry.name[len(prefix):])
            if match and int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


@contextlib.contextmanager
def locked(path: Path) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``path`` for the duration; refuse if a live process holds it.

    A lock left by a process that no longer runs is taken over.
    """
    lock = hidden_name(path, "lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            other = _lock_owner(lock)
            if other is not None and other != os.getpid() and pid_alive(other):
                raise FileExistsError(
                    errno.EEXIST,
                    f"checkpoint {str(path)!r} is in use by another training run (process "
                    f"{other}, lock file {str(lock)!r}); wait for it to finish or stop it, or "
                    "choose another checkpoint path") from None
            lock.unlink(missing_ok=True)  # left by a process that died: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    try:
        yield lock
    finally:
        if _lock_owner(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def check_free_space(path: Path, needed: int) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``path`` unless its folder has ``needed`` bytes free."""
    folder = path.parent if path.parent.exists() else Path(".")
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"not enough free space for checkpoint {str(path)!r}: it needs about {needed:,} "
            f"bytes, {free:,} are free in {str(folder)!r} ({needed - free:,} bytes missing); "
            "free some space or choose a path on another disk")


def _fsync_dir(folder: Path) -> None:
    try:  # makes the rename itself durable; not possible on every platform
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
