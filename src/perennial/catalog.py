"""A cache of ``perennial list`` answers, so listing names does not import torch.

Listing strategies, benchmarks or models needs their registries, and those import torch
(seconds on a busy machine). The answer only changes when perennial's code or the
installed plug-ins change, so it is cached under a key made of perennial's version, the
path, size and modification time of every module of the package, the Python version and
the modification times of the import path's folders (installing a plug-in changes them). The first ``list`` after an install or
an edit fills the cache; later ones read it (a few milliseconds).

The cache lives in ``$PERENNIAL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/perennial`` or
``~/.cache/perennial``); ``PERENNIAL_CACHE_DIR=off`` disables it. A cache that cannot be
read or written is ignored: listing then just takes the slow path.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path | None:
    env = os.environ.get("PERENNIAL_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "perennial"


def _installed_state() -> list[str]:
    """Modification times of the import path's folders: installing or removing a package
    (and so a plug-in's entry points) changes its site-packages folder. Much cheaper than
    reading every package's entry points."""
    out = []
    for p in sys.path:
        try:
            out.append(f"{p}|{os.stat(p or '.').st_mtime_ns}")
        except OSError:
            continue
    return out


def code_key() -> str:
    """A digest that changes whenever perennial's modules or the installed plug-ins change."""
    from perennial import __version__

    root = Path(__file__).parent
    h = hashlib.sha256(f"{__version__}|{sys.version}|{root}".encode())
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                st = os.stat(os.path.join(d, f))
                h.update(f"{os.path.relpath(os.path.join(d, f), root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    for e in _installed_state():
        h.update(e.encode())
    for var in ("PERENNIAL_PLUGINS",):
        h.update(f"{var}={os.environ.get(var, '')}".encode())
    return h.hexdigest()[:24]


def cached_lines(name: str, produce: Callable[[], list[str]]) -> list[str]:
    """``produce()``'s lines, from the cache when the code has not changed since it was stored."""
    d = cache_dir()
    if d is None:
        return produce()
    path = d / f"list-{name}-{code_key()}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list) and all(isinstance(x, str) for x in data):
            return data
    except (OSError, ValueError):
        pass
    lines = produce()
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(lines), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return lines
