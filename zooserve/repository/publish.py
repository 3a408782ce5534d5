"""Publishing a version folder: the one way training (`zooserve train`), export (`zooserve
export`) and library builds (`zooserve library build`) add a version to a model folder.

    with publish_version(model_folder, overwrite=False) as staged:
        write the version's files into staged.folder (its number is staged.version)
    staged.target  # the published version folder

The files are written into a hidden staging folder inside the model folder: on the same
filesystem, so the last step is one atomic rename, and hidden, so a polling server skips it
and never sees half a version. If the block raises (Ctrl-C included), the staging folder goes,
and so do the model folder and its parents if this publish created them and they are still
empty: the repository is left as it was.

The overwrite rule, the same for every caller: a publish adds version N+1 after the highest
version N (1 in an empty folder) and never touches an existing version; with overwrite=True it
replaces the highest version instead, keeping its number, in one atomic swap where the
filesystem allows it (the replaced folder is removed after). Only `zooserve train
--overwrite` asks for that.

Publishers of the same model folder take turns: each holds an exclusive lock on the model
folder (flock on the folder itself, so no lock file is left behind) from numbering until its
rename, so two of them never pick the same number. A second one waits, saying so once.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zooserve.repository.layout import version_folders

log = logging.getLogger(__name__)

# Hidden (a leading `.`), so layout.version_folders skips it silently and it never reads as
# a version folder, whose names are digits only.
STAGING_PREFIX = ".staging-"


class PublishError(OSError):
    """The finished version could not be moved into place; nothing was published."""


@dataclass(frozen=True)
class Staged:
    """Where to write a version being published, and what it will become."""

    folder: Path  # the hidden staging folder to write the files into
    version: int  # the number it is published under (cards record it)
    target: Path  # the version folder it becomes: model_folder / str(version)


def next_version(model_folder: Path, overwrite: bool) -> int:
    """One more than the highest version folder (the repository's rule: `007` is none, and
    neither are files or hidden folders), or the highest itself when overwriting; 1 when
    there is none."""
    versions = version_folders(model_folder)
    if not versions:
        return 1
    return max(versions) if overwrite else max(versions) + 1


@contextmanager
def publish_version(model_folder: Path, *, overwrite: bool = False,
                    version: int | None = None) -> Iterator[Staged]:
    """Stage a new version of `model_folder`, then rename it into place when the block ends
    without an exception; on one, leave nothing behind. See the module's docstring.

    `version`: publish under exactly this number, which must be free (PublishError if not),
    instead of the next one: a pulled library's embedding model must keep the number the
    library names it by."""
    created = _missing_folders(model_folder)
    with _publishing_lock(model_folder):
        try:
            if version is not None and version in version_folders(model_folder):
                raise PublishError(f"{model_folder / str(version)} already exists")
            version = version if version is not None else next_version(model_folder, overwrite)
            target = model_folder / str(version)
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_folder))
            try:
                yield Staged(staging, version, target)
                staging.chmod(0o755)  # mkdtemp makes it private
                _move_in(staging, target, replace=overwrite and target.exists())
            finally:
                # Gone after a plain rename; after a swap it holds the replaced version.
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            for folder in reversed(created):  # deepest first; only while empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise


def _missing_folders(folder: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` would create, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return list(reversed(missing))


@contextmanager
def _publishing_lock(model_folder: Path) -> Iterator[None]:
    """Create the model folder if need be and hold an exclusive lock on it. A publisher that
    failed removes a model folder it created, possibly while another waited on its lock:
    the waiter then finds its locked folder is no longer the one at the path, and starts
    again."""
    said = False
    while True:
        model_folder.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(model_folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # removed between the two calls
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    log.warning("waiting for another publisher of %s to finish", model_folder)
                    said = True
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            if _same_folder(descriptor, model_folder):
                yield
                return
        finally:
            os.close(descriptor)  # releases the lock


def _same_folder(descriptor: int, path: Path) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _move_in(staging: Path, target: Path, replace: bool) -> None:
    try:
        if replace:
            _swap(staging, target)
        else:  # rename(2) fails on a non-empty folder: never replaces another's version
            staging.rename(target)
    except OSError as error:
        raise PublishError(f"cannot move the new version into {target}: {error}") from None


def _swap(staging: Path, target: Path) -> None:
    """Put staging's contents at target and target's at staging: atomically where the kernel
    and filesystem support RENAME_EXCHANGE, else in two renames (target is briefly
    missing)."""
    if _renameat2(staging, target, _RENAME_EXCHANGE):
        return
    aside = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target.parent))
    aside.rmdir()
    target.rename(aside)
    try:
        staging.rename(target)
    except OSError:
        aside.rename(target)
        raise
    aside.rename(staging)  # removed with the staging folder


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _renameat2(source: Path, destination: Path, flags: int) -> bool:
    """Linux's renameat2(2) with `flags`: True when done, False when this system or
    filesystem does not offer it (the caller falls back); other failures raise OSError."""
    if _libc_renameat2 is None:
        return False
    result = _libc_renameat2(
        _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), flags
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(destination))
