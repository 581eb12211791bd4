"""Text-domain streams for continual pre-training of language models (offline, deterministic).

Each experience is one text *domain* (a corpus). Its documents are split into validation and
training documents with a fixed seed (a document is never in both), each side is joined into
one token sequence and cut into non-overlapping windows of ``context + 1`` tokens:
``x = window[:-1]``, ``y = window[1:]`` (int64, shape (N, context)).

Built-in domains come from text that every CPython installation carries, found at run time
(``pydoc_data.__file__``, ``sysconfig.get_paths()``), so nothing is downloaded:

- ``prose``: English prose, the language-reference topics of ``pydoc_data.topics`` (the text
  of ``help('if')`` etc.), one document per topic;
- ``python``: Python source of the standard library (``.py`` files, test suites and
  ``site-packages`` excluded), one document per file;
- ``c``: C headers of the Python installation (``include/**/*.h``), one document per file.

The exact text depends on the Python version (3.11.7 here); within one installation the
stream is identical on every build. Your own domains: ``text_dir(path)`` reads one sub-folder
per domain (every file below it is a document, UTF-8).

Tokenisation is byte-level by default (vocabulary 256, no files needed). A Hugging Face
``tokenizers`` file can be used instead (``tokenizer="tokenizers:path/to/tokenizer.json"``,
needs the optional ``tokenizers`` package; nothing is downloaded).
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from perennial.errors import DataError
from perennial.streams.core import Experience, Split, Stream

#: documents of a domain: (name, UTF-8 bytes or the file holding them), in a fixed order
Documents = list[tuple[str, bytes | Path]]

DOMAIN_INFO: dict[str, str] = {
    "prose": "English prose: the language-reference help topics in pydoc_data.topics (about 0.45 MB)",
    "python": "Python source: the standard library's .py files, without test suites (about 30 MB available)",
    "c": "C source: the C headers in the Python installation's include directory (about 0.9 MB)",
}
DEFAULT_DOMAINS: tuple[str, ...] = ("prose", "python", "c")
SPLIT_SEED = 0  # the train/validation split is fixed, whatever the run seed


# ------------------------------------------------------------------ tokenisers
class Tokenizer(Protocol):
    spec: str
    vocab_size: int

    def encode(self, data: bytes) -> np.ndarray: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """Byte-level tokens: one id per UTF-8 byte (vocabulary 256). Lossless and download-free."""

    spec = "byte"
    vocab_size = 256

    def encode(self, data: bytes | str) -> np.ndarray:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class FileTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer read from a local ``tokenizer.json``."""

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError:
            raise DataError(
                "tokenizer 'tokenizers:...' needs the optional package 'tokenizers'; install it with: "
                "pip install tokenizers (or use the default byte-level tokenizer)"
            ) from None
        if not Path(path).is_file():
            raise DataError(f"tokenizer file {path!r} does not exist; give the path of a tokenizer.json")
        self._tok = HFTokenizer.from_file(path)
        self.spec = f"tokenizers:{path}"
        self.vocab_size = int(self._tok.get_vocab_size())

    def encode(self, data: bytes | str) -> np.ndarray:
        text = data.decode("utf-8", errors="ignore") if isinstance(data, bytes) else data
        return np.asarray(self._tok.encode(text).ids, dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


class AutoTokenizerWrapper:
    """A Hugging Face ``transformers`` tokenizer (``AutoTokenizer.from_pretrained``): a model
    directory's own tokenizer, or a hub id's when online."""

    def __init__(self, name: str):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise DataError(
                "tokenizer 'hf:...' needs the package 'transformers': pip install 'perennial[hf]'"
            ) from None
        try:
            self._tok = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot load the tokenizer of {name!r}: {str(e).splitlines()[0]}") from None
        self.spec = f"hf:{name}"
        self.vocab_size = len(self._tok)

    def encode(self, data: bytes | str) -> np.ndarray:
        text = data.decode("utf-8", errors="ignore") if isinstance(data, bytes) else data
        return np.asarray(self._tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids]))


def load_tokenizer(spec: str = "byte") -> Tokenizer:
    """``"byte"`` (default), ``"tokenizers:PATH"`` (a local tokenizer.json) or ``"hf:PATH_OR_ID"``
    (a Hugging Face model's tokenizer)."""
    if spec == "byte":
        return ByteTokenizer()
    if spec.startswith("tokenizers:"):
        return FileTokenizer(spec.partition(":")[2])
    if spec.startswith("hf:"):
        return AutoTokenizerWrapper(spec.partition(":")[2])
    raise DataError(f"unknown tokenizer {spec!r}; use 'byte', 'tokenizers:PATH/TO/tokenizer.json' or 'hf:MODEL'")


# ------------------------------------------------------------------- corpora
def _files(root: Path, suffix: str = "", skip: frozenset[str] = frozenset()) -> Documents:
    """Files below ``root`` ending in ``suffix``, sorted by relative path; directories in ``skip`` are pruned."""
    from perennial.files import file_kind_problem

    found, bad = [], []
    for d, dirs, files in os.walk(root):  # symlinked folders are not followed: no loops
        dirs[:] = [x for x in dirs if x not in skip and not x.startswith(".")]
        for f in files:
            if f.endswith(suffix) and not f.startswith("."):
                problem = file_kind_problem(Path(d) / f)  # stat only: a FIFO or device is never opened
                (bad if problem else found).append(problem or Path(d) / f)
    if bad:
        raise DataError(f"text folder {root}: " + "; ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else ""))
    return sorted(((p.relative_to(root).as_posix(), p) for p in found), key=lambda d: d[0])  # read lazily


def _read(data: bytes | Path) -> bytes:
    return data.read_bytes() if isinstance(data, Path) else data


def builtin_documents(name: str) -> Documents:
    """The documents of a built-in domain (see :data:`DOMAIN_INFO`)."""
    if name == "prose":
        from pydoc_data.topics import topics

        return [(k, topics[k].encode("utf-8")) for k in sorted(topics)]
    paths = sysconfig.get_paths()
    if name == "python":
        skip = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
        return _files(Path(paths["stdlib"]), ".py", skip)
    if name == "c":
        return _files(Path(paths["include"]), ".h")
    raise DataError(f"unknown text domain {name!r}; built-in domains: {', '.join(DOMAIN_INFO)}")


def dir_documents(path: Path) -> Documents:
    """Every file below ``path`` (sorted by relative path) is one document."""
    return _files(path)


def split_documents(docs: Documents, max_bytes: int, val_bytes: int, seed: int = SPLIT_SEED) -> tuple[bytes, bytes]:
    """(train text, validation text): documents in a seeded order, validation first.

    Validation takes whole documents until it holds ``val_bytes`` (the last one is cut);
    training takes the following documents up to ``max_bytes``. A document is never in both.
    A domain of a single document is first cut into 4 KB pieces.
    """
    if len(docs) == 1:
        name, data = docs[0][0], _read(docs[0][1])
        docs = [(f"{name}[{i}]", data[i : i + 4096]) for i in range(0, len(data), 4096)]
    if len(docs) < 2:
        raise DataError("a text domain needs at least two documents (or one of more than 4 KB) to split")
    order = np.random.default_rng(seed).permutation(len(docs))
    val: list[bytes] = []
    train: list[bytes] = []
    n_val = n_train = 0
    for i in order:
        if n_val >= val_bytes and n_train >= max_bytes:
            break
        data = _read(docs[i][1]).strip()
        if not data:
            continue
        if n_val < val_bytes:
            val.append(data[: val_bytes - n_val])
            n_val += len(val[-1])
        else:
            train.append(data[: max_bytes - n_train])
            n_train += len(train[-1])
    return b"\n\n".join(train), b"\n\n".join(val)


def windows(tokens: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``context + 1`` tokens: ``x = w[:-1]``, ``y = w[1:]``, (N, context)."""
    n = max((len(tokens) - 1) // context, 0)
    t = torch.as_tensor(np.ascontiguousarray(tokens[: n * context + 1]), dtype=torch.long)
    x = t[: n * context].reshape(n, context).clone()
    y = t[1 : n * context + 1].reshape(n, context).clone()
    return x, y


@dataclass(frozen=True)
class Domain:
    name: str
    documents: Documents


def text_stream(
    domains: Sequence[Domain],
    *,
    context: int = 64,
    max_bytes: int = 400_000,
    val_bytes: int = 16_384,
    tokenizer: str = "byte",
    name: str = "text-domains",
) -> Stream:
    """A language-modelling stream with one experience per domain, in the given order."""
    if context < 2:
        raise DataError(f"context must be >= 2 tokens, got {context}")
    if not domains:
        raise DataError("a text stream needs at least one domain")
    tok = load_tokenizer(tokenizer)
    exps = []
    sizes = {}
    for i, d in enumerate(domains):
        train_text, val_text = split_documents(d.documents, max_bytes, val_bytes)
        xtr, ytr = windows(tok.encode(train_text), context)
        xte, yte = windows(tok.encode(val_text), context)
        if len(xtr) == 0 or len(xte) == 0:
            raise DataError(
                f"text domain {d.name!r} is too small for context {context}: {len(train_text)} training and "
                f"{len(val_text)} validation bytes; add text, lower benchmark.context or raise benchmark.val_bytes"
            )
        sizes[d.name] = {"train_tokens": int(xtr.numel()), "val_tokens": int(xte.numel())}
        exps.append(Experience(i, d.name, Split.make(xtr, ytr), Split.make(xte, yte), classes=()))
    return Stream(
        name=name,
        scenario="domain",
        experiences=tuple(exps),
        n_classes=tok.vocab_size,
        input_shape=(context,),
        meta={"tokenizer": tok.spec, "sizes": sizes},
        kind="lm",
    )


def text_domains(
    domains: Sequence[str] | None = None,
    path: str | None = None,
    *,
    context: int = 64,
    max_bytes: int = 400_000,
    val_bytes: int = 16_384,
    tokenizer: str = "byte",
) -> Stream:
    """Built-in domains (``prose``, ``python``, ``c``) or, with ``path``, one sub-folder per domain.

    ``domains`` selects and orders them (default: all, built-in order ``prose, python, c``;
    for a folder: sub-folders in name order).
    """
    if path is not None:
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"text folder {str(root)!r} does not exist; give a folder with one sub-folder per domain")
        available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not available:
            raise DataError(f"text folder {str(root)!r} has no sub-folders; put each domain's files in its own folder")
        names = list(domains) if domains else available
        missing = [n for n in names if n not in available]
        if missing:
            raise DataError(f"no sub-folder {', '.join(map(repr, missing))} in {root}; found: {', '.join(available)}")
        doms = [Domain(n, dir_documents(root / n)) for n in names]
    else:
        names = list(domains) if domains else list(DEFAULT_DOMAINS)
        unknown = [n for n in names if n not in DOMAIN_INFO]
        if unknown:
            raise DataError(
                f"unknown text domain {', '.join(map(repr, unknown))}; built-in: {', '.join(DOMAIN_INFO)} "
                "(or give your own with --text-dir DIR)"
            )
        doms = [Domain(n, builtin_documents(n)) for n in names]
    if len(set(names)) != len(names):
        raise DataError(f"domains {names} name a domain twice")
    return text_stream(
        doms, context=context, max_bytes=max_bytes, val_bytes=val_bytes, tokenizer=tokenizer, name="text-domains"
    )
