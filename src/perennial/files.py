"""Reading untrusted files without hanging or exhausting memory.

Every file perennial reads on a user's behalf (config files, ``.npz`` experiences, text
domains) goes through these helpers:

- the file type is checked with ``stat`` *before* anything opens it: a FIFO would block
  ``open`` for reading forever, a device (``/dev/zero``) never ends; symlinks are followed
  and a link to such a file, a dangling link or a symlink loop is reported by name;
- sizes are checked against a limit before reading;
- ``.npz`` archives are checked member by member (declared array shape and dtype against
  the bytes stored and against a memory limit) before numpy reads any array, so a declared
  size of 10**15 elements or a bit-flipped archive is an error, not an allocation failure.

All problems raise :class:`~perennial.errors.DataError` (or ``ConfigError`` for config
files, via the caller), which the CLI turns into exit code 2.
"""

from __future__ import annotations

import errno
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

from perennial.errors import DataError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def file_kind_problem(path: str | Path) -> str | None:
    """None for a regular file (after following symlinks), else what is wrong with ``path``."""
    p = Path(path)
    try:
        st = os.stat(p)  # follows symlinks; never opens the file
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{p} is a symlink loop"
        if os.path.islink(p):
            return f"{p} is a symlink to {os.readlink(p)!r}, which does not exist"
        if e.errno == errno.ENOENT:
            return f"{p} does not exist"
        return f"{p} cannot be read: {e.strerror}"
    for test, words in _KINDS:
        if test(st.st_mode):
            via = f" (through a symlink to {os.path.realpath(p)})" if os.path.islink(p) else ""
            return f"{p} is {words}{via}, not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return f"{p} is not a regular file"
    return None


def check_regular(path: str | Path, what: str = "file") -> int:
    """The size of ``path`` in bytes; :class:`DataError` unless it is a regular, readable file."""
    problem = file_kind_problem(path)
    if problem:
        raise DataError(f"{what}: {problem}")
    return os.stat(path).st_size


def read_bytes(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The contents of a regular file of at most ``limit`` bytes (checked before reading)."""
    size = check_regular(path, what)
    if size > limit:
        raise DataError(f"{what}: {path} is {size:,} bytes; the limit is {limit:,} bytes")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # never blocks, even if swapped for a FIFO
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError(f"{what}: {path} changed into something that is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise DataError(f"{what}: {path} grew past the limit of {limit:,} bytes while being read")
    return data


def npz_members(path: str | Path, max_array_bytes: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """``{name: (shape, dtype)}`` of an ``.npz`` file, checked without reading the arrays.

    Raises :class:`DataError` for a file that is empty, not a zip archive, truncated, holds
    members that are not ``.npy`` arrays, object arrays (pickles), or declares an array
    whose size exceeds the bytes stored or ``max_array_bytes``.
    """
    import numpy as np

    size = check_regular(path, "npz file")
    if size == 0:
        raise DataError(f"{path} is empty (0 bytes); write it with numpy.savez(path, x_train=..., ...)")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz archive (not a zip file, or truncated)")
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if not info.filename.endswith(".npy"):
                    raise DataError(f"{path}: member {info.filename!r} is not a .npy array")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    raise DataError(f"{path}: array {name!r} holds Python objects; store numbers (int or float)")
                n = 1
                for d in shape:
                    n *= int(d)
                declared = n * dtype.itemsize
                if declared > max_array_bytes:
                    raise DataError(
                        f"{path}: array {name!r} declares shape {tuple(shape)} of {dtype} = {declared:,} bytes, "
                        f"more than the limit of {max_array_bytes:,} bytes"
                    )
                if declared > info.file_size:
                    raise DataError(
                        f"{path}: array {name!r} declares shape {tuple(shape)} of {dtype} = {declared:,} bytes "
                        f"but the archive stores only {info.file_size:,}; the file is damaged"
                    )
                out[name] = (tuple(int(d) for d in shape), dtype)
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise DataError(f"{path} is damaged: {e}") from None
    except Exception as e:  # zlib.error and friends from a bit-flipped archive
        raise DataError(f"{path} is damaged: {type(e).__name__}: {e}") from None
    return out


def load_npz(path: str | Path, max_array_bytes: int) -> dict[str, Any]:
    """The arrays of a checked ``.npz`` file (see :func:`npz_members`); CRC errors are DataErrors."""
    import numpy as np

    npz_members(path, max_array_bytes)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile (bad CRC), zlib.error, ValueError, OSError
        raise DataError(f"{path} is damaged: {type(e).__name__}: {e}") from None


#: a config file larger than this is not a config (the biggest real ones are a few KiB)
MAX_CONFIG_BYTES = 1 << 20
#: tables nested deeper than this are not a run config (its deepest key has 4 levels)
MAX_CONFIG_DEPTH = 16


def config_text(path: str | Path) -> str:
    """The text of a config file; ``ConfigError`` (field ``--config``) for anything else."""
    from perennial.errors import ConfigError

    try:
        data = read_bytes(path, MAX_CONFIG_BYTES, "--config")
    except DataError as e:
        raise ConfigError([("--config", str(e).removeprefix("--config: "))]) from None
    except OSError as e:
        raise ConfigError([("--config", f"cannot read {path}: {e.strerror}")]) from None
    if b"\0" in data:
        raise ConfigError([("--config", f"{path} is a binary file, not TOML or JSON text")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            [("--config", f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8 TOML or JSON")]
        ) from None


def nesting_depth(value: Any, limit: int = 64) -> int:
    """How deeply ``value``'s dicts and lists nest (stops counting past ``limit``)."""
    depth, level = 0, [value]
    while level and depth <= limit:
        nxt = []
        for v in level:
            if isinstance(v, dict):
                nxt += list(v.values())
            elif isinstance(v, list):
                nxt += v
        if not nxt:
            break
        depth, level = depth + 1, nxt
    return depth
