"""Files written whole or not at all, and paths checked before a long run writes them."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from livelearn.errors import cannot, make_folder


def check_writable(path: str | Path, what: str) -> Path:
    """``path``, once sure that ``replace_file`` can write it: its folder made now, a
    file can be made in it, and ``path`` is no folder. Else the ConfigError that writing
    would give (``cannot create report folder ...``, ``cannot write report ...``), now,
    before a long run whose result it was to hold."""
    path = Path(path)
    make_folder(path.parent, f"{what} folder")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        fd, tmp = _new_temp(path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise cannot(f"write {what}", path, e) from None
    return path


def replace_file(path: str | Path, data: bytes, what: str) -> Path:
    """Write ``data`` to ``path``, creating parent folders. The file is replaced
    atomically, its bytes on disk first, so a reader (or a process started after a
    crash) finds the old bytes or the new, never half; a new file gets the permissions
    of any (0666 less the umask). ConfigError naming ``what`` and the path if it cannot be."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _new_temp(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise cannot(f"write {what}", path, e) from None
    return path


def _new_temp(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, open for writing, and its path."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
