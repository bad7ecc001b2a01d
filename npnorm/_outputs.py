"""Result files of the command line: checked before a long run starts, and written with one-line errors."""

from __future__ import annotations

import contextlib
import os


class OutputError(OSError):
    """A result file or folder that cannot be written."""


def check_output(path: str | None, flag: str, *, folder: bool = False) -> None:
    """Fail before a long run, not after it, when its result cannot be written (creating folders as needed)."""
    if path is None:
        return
    directory = path if folder else os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None
    if not folder and (os.path.isdir(path) or path.endswith(("/", os.sep))):
        raise OutputError(f"cannot write {flag} {path}: it names a folder, not a file")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"cannot write {flag} {path}: {directory} is not writable")
    if not folder:
        _try_opening(path, flag)


def _try_opening(path: str, flag: str) -> None:
    """Open `path` for appending, which leaves a file that exists as it is, and remove it again if this made
    it: catches what the folder checks cannot (a name too long, a trailing '/', a file without write permission)."""
    existed = os.path.lexists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None
    if not existed:
        os.remove(path)


@contextlib.contextmanager
def writing(path: str, flag: str):
    """Turn an OSError while writing `path` into an OutputError naming the option."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None
