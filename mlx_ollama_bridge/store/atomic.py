"""Atomic writes: a crash (SIGKILL, OOM kill, power cut) leaves the old state or the new one,
never a half-written file or directory under a real name.

Every file and directory the store writes is built under a hidden temporary name starting
with ``.partial-`` in its target's directory, flushed to disk (``fsync``) and renamed into
place; the directory is flushed after the rename. Readers skip names starting with ``.``,
so a half-built one is never listed or loaded. While a temporary exists its writer holds an
``flock`` on it; :func:`sweep` deletes the temporaries whose writer is gone (the kernel drops
a dead process's locks), which is how garbage of an interrupted write is cleaned up.

A write that fails for lack of space (``ENOSPC``, a quota, a file-size limit) raises
:class:`StoreFull` (507) naming the directory, and leaves nothing behind.

Helpers: :func:`atomic_file` / :func:`write_atomic` (one file), :func:`staged_dir` (a
directory built at a temporary path, then renamed), :func:`scratch_dir` (working space
removed afterwards), :func:`discard` (remove a directory: renamed away first), :func:`sweep`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import BridgeError
from .faults import crash_point

PARTIAL = ".partial-"  # every temporary name in the store starts with this
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class StoreFull(BridgeError):
    """A write to the store failed for lack of space (507 Insufficient Storage)."""

    status_code = 507


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a disk-full, quota or file-size-limit error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def disk_errors(where: Path, what: str) -> Iterator[None]:
    """Turn a lack-of-space error inside the block into :class:`StoreFull`."""
    try:
        yield
    except OSError as exc:
        if not no_space(exc):
            raise
        raise store_full(exc.errno or errno.ENOSPC, where, what) from exc


@contextlib.contextmanager
def library_writes(where: Path) -> Iterator[None]:
    """Around a library's writes that fail without an errno (MLX: ``[write] Unable to write
    …``): a full disk or the file-size limit becomes the ``OSError`` it was, judged at once,
    before a cleanup frees the space again."""
    try:
        yield
    except RuntimeError as exc:
        code = _write_failure(where, exc)
        if code is None:
            raise
        raise OSError(code, os.strerror(code)) from exc


def store_full(code: int, where: Path, what: str) -> StoreFull:
    """The 507 for a lack-of-space error ``code``: the system's own words first (Ollama
    reports Go's ``no space left on device``), then the directory and the fix."""
    return StoreFull(
        f"{os.strerror(code).lower()}: writing {what} to {where} failed; nothing was kept. "
        "Free some space (or point MLX_BRIDGE_MODELS at a bigger disk) and try again"
    )


def _write_failure(where: Path, exc: RuntimeError) -> int | None:
    """``ENOSPC`` or ``EFBIG`` if a library's write error without errno was a full disk (less
    than 1 MiB left) or the file-size limit; None if it was something else."""
    if "write" not in str(exc).lower():
        return None
    try:
        stat = os.statvfs(where)
    except OSError:
        return None
    if stat.f_bavail * stat.f_frsize < 1 << 20:
        return errno.ENOSPC
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return errno.EFBIG
    return None


def copy_tree(source: Path, destination: Path, *, hardlink: bool = False) -> None:
    """``shutil.copytree`` without hidden entries, stopping at the first full-disk error
    (copytree itself would go on and raise one ``shutil.Error`` of strings at the end).

    With ``hardlink``, each file (symlinks followed) is hard-linked where the filesystem
    allows, copied otherwise: for immutable, content-addressed sources such as blobs.
    """

    def copy(src: str, dst: str) -> object:
        if hardlink:
            try:
                os.link(os.path.realpath(src), dst)
                return dst
            except OSError:
                pass  # another filesystem, or links not allowed: copy
        try:
            return shutil.copy2(src, dst)
        except OSError as exc:
            if no_space(exc):
                code = exc.errno or errno.ENOSPC
                raise store_full(code, Path(dst).parent, Path(dst).name) from exc
            raise

    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".*"), copy_function=copy)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename in it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _temp_name(target: Path, kind: str = "") -> str:
    return f"{PARTIAL}{kind}{target.name[:60]}-{uuid.uuid4().hex[:12]}"


def _create_locked(target: Path, kind: str, *, directory: bool) -> tuple[Path, int]:
    """A new ``.partial-`` file or directory beside ``target`` and an fd holding its flock.

    Creating and locking are two steps, so a :func:`sweep` can take the lock in between and
    delete the entry as garbage; the entry is then created again under a new name.
    """
    while True:
        temp = target.with_name(_temp_name(target, kind))
        if directory:
            temp.mkdir(mode=0o755)
            try:
                fd = os.open(temp, os.O_RDONLY)
            except FileNotFoundError:
                continue  # swept before it could be opened
        else:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # alive: sweep keeps it
        try:
            if os.stat(temp, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return temp, fd
        except FileNotFoundError:
            pass  # swept before the lock was ours
        os.close(fd)


@contextlib.contextmanager
def atomic_file(target: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary handle whose bytes become ``target`` when the block ends without error.

    The handle writes a locked temporary beside ``target``; at the end it is flushed,
    fsynced and renamed over ``target``. On an error (or a kill) ``target`` is unchanged.
    """
    target = Path(target)
    with disk_errors(target.parent, target.name):
        target.parent.mkdir(parents=True, exist_ok=True)
        temp, fd = _create_locked(target, "", directory=False)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
                os.fchmod(handle.fileno(), mode)
                crash_point("store.file")
                os.replace(temp, target)
            fsync_dir(target.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def write_atomic(target: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Replace ``target`` with ``data`` atomically (text is written as UTF-8)."""
    with atomic_file(target, mode=mode) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A path (not existing yet) to build a directory at; it becomes ``target`` at the end.

    Build there (``shutil.copytree(src, path)``, a converter writing ``path``); when the
    block ends without error its files are fsynced and it is renamed to ``target`` (an
    existing ``target``, e.g. the leftover of an older interrupted write, is discarded
    first). On an error or a kill nothing appears under ``target``; the locked holder
    directory is removed here or by a later :func:`sweep`.
    """
    target = Path(target)
    with disk_errors(target.parent, target.name), _locked_holder(target, "") as holder:
        staging = holder / target.name
        yield staging
        if not staging.is_dir():
            raise FileNotFoundError(f"nothing was built at {staging}")
        _fsync_tree(staging)
        crash_point("store.staged")
        if target.exists() or target.is_symlink():
            discard(target)
        staging.rename(target)
        fsync_dir(target.parent)


@contextlib.contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """An empty working directory under ``parent``, deleted at the end (or swept after a
    kill). Use it for files that never become part of the store themselves."""
    with _locked_holder(Path(parent) / "scratch", "scratch-") as holder:
        yield holder


@contextlib.contextmanager
def _locked_holder(target: Path, kind: str) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    holder, fd = _create_locked(target, kind, directory=True)
    try:
        yield holder
    finally:
        shutil.rmtree(holder, ignore_errors=True)
        os.close(fd)


def discard(directory: Path) -> None:
    """Delete ``directory`` so that a crash midway never leaves part of it under its name:
    it is renamed to a trash name first (atomic), then deleted; :func:`sweep` finishes a
    deletion a crash interrupted."""
    directory = Path(directory)
    trash = directory.with_name(_temp_name(directory, "trash-"))
    os.rename(directory, trash)
    fsync_dir(directory.parent)
    crash_point("store.discard")
    shutil.rmtree(trash, ignore_errors=True)


def sweep(directory: Path) -> list[Path]:
    """Delete the ``.partial-`` entries of ``directory`` whose writer is gone; returns them.

    An entry is garbage when its ``flock`` can be taken: a live writer holds it, and the
    kernel releases a killed process's locks.
    """
    removed: list[Path] = []
    try:
        entries = [e for e in Path(directory).iterdir() if e.name.startswith(PARTIAL)]
    except OSError:
        return removed
    for entry in entries:
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its writer is alive
        try:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):  # files before their directories
        if path.is_symlink():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EBADF):  # a no-op where unsupported
                raise
        finally:
            os.close(fd)
    fsync_dir(root)


__all__ = [
    "PARTIAL",
    "StoreFull",
    "atomic_file",
    "copy_tree",
    "discard",
    "disk_errors",
    "fsync_dir",
    "library_writes",
    "no_space",
    "scratch_dir",
    "staged_dir",
    "store_full",
    "sweep",
    "write_atomic",
]
