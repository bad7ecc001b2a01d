"""Checkpoints: `save(state_dict, path)` and `load(path)` for flat `{str: numeric ndarray}` dicts.

The file is an ordinary `.npz` archive (a zip of `.npy` arrays, uncompressed, as `np.savez` writes it), so
`np.load(path)` reads it too. Two promises:

* Only numbers, both ways. Arrays are written and read with `allow_pickle=False`: saving an object or
  string array is a TypeError, and loading a file that holds one is a ValueError. Loading a checkpoint
  therefore never runs code from the file.
* A save is atomic. The archive is written to a temporary file in the target's folder, flushed and
  fsynced, then renamed over the target with `os.replace` (atomic on POSIX and Windows). If anything fails
  the temporary file is removed and the previous checkpoint is left exactly as it was; a crash leaves at
  worst a stray `.<name>.*.tmp` file (the name cut to its first 40 characters), never a half-written
  checkpoint under the real name. The file gets the permissions any new file gets (0o666 less the umask).

We write the zip ourselves (`zipfile` + `np.lib.format.write_array`, exactly what `np.savez` does) rather
than call `np.savez(file, **arrays)`, whose own keyword arguments would collide with a key named "file".
"""

from __future__ import annotations

import contextlib
import errno
import math
import numbers
import os
import secrets
import struct
import zipfile
import zlib
from collections.abc import Mapping
from io import BytesIO

import numpy as np

from .tensor import Tensor

__all__ = ["load", "save"]

_NUMERIC_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex

# What zipfile and np.lib.format raise on a damaged archive (truncated, flipped bits, not a zip at all);
# OSError is a seek to a garbled offset (the file itself is already open).
_CORRUPT = (zipfile.BadZipFile, ValueError, EOFError, KeyError, struct.error, zlib.error, NotImplementedError, OSError)


def save(state_dict: Mapping, path) -> None:
    """Write `state_dict` ({str: numeric ndarray or number}) to `path` as an `.npz` archive, atomically.

    The file name is used exactly as given (no `.npz` is appended). Values may be NumPy arrays, NumPy or
    Python numbers, or Tensors (their `.data`); anything else, or a key that is not a string, is a TypeError
    raised before the disk is touched.
    """
    arrays = _checked_arrays(state_dict)
    path = os.fsdecode(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp_name, fd = _create_temporary(folder, os.path.basename(path))
    try:
        with open(fd, "wb") as tmp:
            # Write through the open file object: np.savez and friends append ".npz" to a bare name.
            with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                for key, array in arrays.items():
                    with archive.open(key + ".npy", mode="w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(folder)


def _create_temporary(folder: str, name: str) -> tuple[str, int]:
    """A new file `.<name>.<random>.tmp` in `folder`, opened for writing: (its path, its descriptor).

    Created with mode 0o666, so that the process's umask, as it is now, sets its permissions as for any
    new file (tempfile's files are readable by their owner only). `name` is cut to 40 characters so that
    the temporary name stays within the file system's 255-byte limit wherever `name` itself does.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp_name = os.path.join(folder, f".{name[:40]}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp_name, os.open(tmp_name, flags, 0o666)
        except FileNotFoundError:  # the error would name our temporary file, which the caller never asked for
            raise FileNotFoundError(
                errno.ENOENT, f"save: the folder {folder!r} does not exist", os.path.join(folder, name)
            ) from None
        except FileExistsError:  # another writer picked the same random part: pick again
            continue


def load(path) -> dict[str, np.ndarray]:
    """Read a checkpoint written by `save` (or any `.npz` of numeric arrays) into a dict of arrays.

    Raises FileNotFoundError if `path` does not exist, and ValueError("load: <path> is not a valid npnorm
    checkpoint: ...") if it is truncated, corrupt (bad zip structure or CRC), not an `.npz`, or holds
    object arrays. The arrays are read into memory and the file is closed before returning.
    """
    path = os.fsdecode(path)
    try:
        file = open(path, "rb")  # closed by the `with file` below
    except FileNotFoundError as exc:
        raise FileNotFoundError(exc.errno, f"load: no such checkpoint file: {path!r}", path) from None
    with file:
        try:
            return _read_archive(file)
        except _CORRUPT as exc:
            raise ValueError(f"load: {path} is not a valid npnorm checkpoint: {type(exc).__name__}: {exc}") from exc


def _read_archive(file) -> dict[str, np.ndarray]:
    arrays = {}
    with zipfile.ZipFile(file, mode="r") as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not a .npy array")
            # npz members never carry a comment or encryption; a damaged central directory can fake either
            # (a garbled comment length silently swallows the entries after it).
            if info.comment or info.flag_bits & 0x1:
                raise ValueError(f"damaged entry for member {info.filename!r} in the zip directory")
            key = info.filename[: -len(".npy")]
            if key in arrays:
                raise ValueError(f"the key {key!r} appears twice")
            # archive.read checks the member's CRC-32, so a flipped bit is an error before we parse anything.
            data = BytesIO(archive.read(info))
            _check_npy_header(data, info.filename, key)
            arrays[key] = np.lib.format.read_array(data, allow_pickle=False)
    return arrays


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_npy_header(data: BytesIO, member: str, key: str) -> None:
    """Check that a `.npy` member holds numbers, exactly as many bytes of them as its header declares; then
    rewind it.

    Before `read_array`, which allocates the declared array before it reads any data: a header declaring
    shape (10**13,) in a file of a few hundred bytes would otherwise end in a MemoryError, not in a clear
    error. Numeric arrays are written in the format versions 1.0 or 2.0 (3.0 is for structured dtypes with
    non-Latin field names, which hold no numbers we load).
    """
    version = np.lib.format.read_magic(data)
    if version not in _NPY_HEADER_READERS:
        raise ValueError(f"member {member!r} has .npy format version {version}, expected 1.0 or 2.0")
    shape, _, dtype = _NPY_HEADER_READERS[version](data)
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise ValueError(f"{key!r} holds a non-numeric array of dtype {dtype}")
    declared = math.prod(shape) * dtype.itemsize
    held = len(data.getbuffer()) - data.tell()
    if declared != held:
        raise ValueError(f"member {member!r} declares {declared} bytes of data ({shape}, {dtype}) but holds {held}")
    data.seek(0)


def _checked_arrays(state_dict: Mapping) -> dict[str, np.ndarray]:
    """The values of `state_dict` as numeric ndarrays, or a TypeError naming the first bad key or value."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"save: expected a dict of arrays, got {type(state_dict).__name__}")
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save: keys must be strings, got {key!r} of type {type(key).__name__}")
        _check_member_name(key)
        if isinstance(value, Tensor):
            value = value.data  # a Tensor (or Parameter): store its array
        if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, (str, bytes)):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise TypeError(f"save: {key!r} must be a NumPy array or a number, got {type(value).__name__}")
        if value.dtype.kind not in _NUMERIC_KINDS or value.dtype.fields is not None:
            raise TypeError(f"save: {key!r} must hold numbers, got an array of dtype {value.dtype}")
        arrays[key] = value
    return arrays


def _check_member_name(key: str) -> None:
    """A ValueError unless `key` + ".npy" is stored as it is, as a zip member's name, and read back the same.

    zipfile cuts a name at its first NUL (so "a\\0x" and "a\\0y" would both load as "a") and, on Windows,
    turns backslashes into slashes; names are stored as UTF-8, which a lone surrogate cannot be encoded to.
    """
    name = key + ".npy"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"save: the key {key!r} cannot be encoded as UTF-8, as a zip member's name must be") from None
    if zipfile.ZipInfo(name).filename != name:
        raise ValueError(f"save: the key {key!r} cannot be stored unchanged as a zip member's name")


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
