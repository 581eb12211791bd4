"""Numeric sanity of every config field, checked as a class (not field by field).

pydantic's lax mode accepts ``true`` for an ``int`` field (it becomes 1), ``inf`` for a
``float`` field, and integers of any size. :func:`numeric_problems` walks a *raw* (not yet
validated) mapping alongside a pydantic model's annotations and reports, for every numeric
field of every section, strategy and model parameter class:

- a boolean where an integer or a number is meant (``buffer_size = true``);
- a non-finite float (``inf``, ``-inf``, ``nan``) where a finite number is meant — a field
  opts out with ``json_schema_extra={"nonfinite": True}``;
- an integer outside what torch and numpy can hold for its role: seeds (fields whose name
  contains ``seed``) up to 2**63 - 1, every other integer (sizes, counts, steps, kernel
  sizes) up to 2**31 - 1; a float field given an integer too big for a double.

Each problem names the field, the value and the allowed range. The walk follows
``Optional``/unions, lists, dicts and nested models, so new fields are covered without
registering them anywhere. This module imports only pydantic (usable from every layer).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

#: largest integer accepted for sizes, counts, steps (a tensor dimension or loop bound)
SIZE_LIMIT = 2**31 - 1
#: largest integer accepted for seeds (torch.manual_seed and numpy accept 64-bit seeds)
SEED_LIMIT = 2**63 - 1

Problem = tuple[str, str]


def _leaves(ann: Any) -> list[Any]:
    """The alternatives of a (possibly Optional/Union/Annotated) annotation."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _leaves(typing.get_args(ann)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [leaf for a in typing.get_args(ann) for leaf in _leaves(a)]
    return [ann]


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None, str]:
    lo = hi = None
    parts = []
    for m in metadata:
        for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, key, None)
            if v is not None:
                parts.append(f"{sym} {v}")
                if key in ("ge", "gt"):
                    lo = v
                else:
                    hi = v
    return lo, hi, ", ".join(parts)


def _range_text(kind: str, name: str, metadata: list[Any]) -> str:
    lo, hi, declared = _bounds(metadata)
    if kind == "int":
        limit = SEED_LIMIT if "seed" in name else SIZE_LIMIT
        lo_t = lo if lo is not None else -limit
        hi_t = min(hi, limit) if hi is not None else limit
        return f"an integer from {lo_t} to {hi_t}"
    return f"a finite number{' ' + declared if declared else ''}"


def _is_type(leaf: Any, t: type) -> bool:
    return leaf is t or typing.get_origin(leaf) is t


def _model_leaf(leaves: list[Any]) -> type[BaseModel] | None:
    for leaf in leaves:
        if isinstance(leaf, type) and issubclass(leaf, BaseModel):
            return leaf
    return None


def _check(ann: Any, value: Any, loc: str, name: str, metadata: list[Any], nonfinite: bool) -> list[Problem]:
    leaves = _leaves(ann)
    if any(leaf is Any for leaf in leaves):
        return []
    wants_int = any(_is_type(leaf, int) for leaf in leaves)
    wants_float = any(_is_type(leaf, float) for leaf in leaves)
    wants_bool = any(_is_type(leaf, bool) for leaf in leaves)
    kind = "int" if wants_int and not wants_float else "float"
    if isinstance(value, bool):
        if (wants_int or wants_float) and not wants_bool:
            return [
                (
                    loc,
                    f"must be {_range_text(kind, name, metadata)}, got {str(value).lower()} (a boolean, not a number)",
                )
            ]
        return []
    if isinstance(value, float):
        if (wants_float or wants_int) and not math.isfinite(value) and not nonfinite:
            return [(loc, f"must be {_range_text(kind, name, metadata)}, got {value!r}")]
        return []
    if isinstance(value, int):
        if wants_int:
            limit = SEED_LIMIT if "seed" in name else SIZE_LIMIT
            if abs(value) > limit:
                return [(loc, f"must be {_range_text('int', name, metadata)}, got {value} (too large)")]
        elif wants_float and abs(value) > 2**1023:
            return [
                (loc, f"must be {_range_text('float', name, metadata)}, got an integer of {len(str(value))} digits")
            ]
        return []
    if isinstance(value, Mapping):
        model = _model_leaf(leaves)
        if model is not None:
            return numeric_problems(model, value, loc)
        for leaf in leaves:
            if typing.get_origin(leaf) is dict and len(typing.get_args(leaf)) == 2:
                inner = typing.get_args(leaf)[1]
                return [p for k, v in value.items() for p in _check(inner, v, f"{loc}.{k}", name, [], nonfinite)]
        return []
    if isinstance(value, (list, tuple)):
        for leaf in leaves:
            if typing.get_origin(leaf) in (list, tuple, set, frozenset) and typing.get_args(leaf):
                inner = typing.get_args(leaf)[0]
                return [p for i, v in enumerate(value) for p in _check(inner, v, f"{loc}.{i}", name, [], nonfinite)]
    return []


def numeric_problems(model: type[BaseModel], raw: Any, prefix: str = "") -> list[Problem]:
    """``(field, message)`` for every numeric value in ``raw`` that ``model`` would misread.

    ``raw`` is the unvalidated input of ``model``; keys that are not fields are left to
    pydantic (unknown keys are its business). Nested models, lists and dicts are followed.
    """
    if not isinstance(raw, Mapping):
        return []
    out: list[Problem] = []
    for key, value in raw.items():
        field = model.model_fields.get(str(key))
        if field is None:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        loc = f"{prefix}.{key}" if prefix else str(key)
        out += _check(field.annotation, value, loc, str(key), list(field.metadata), bool(extra.get("nonfinite")))
    return out


def merge_problems(first: list[Problem], then: list[Problem]) -> list[Problem]:
    """``first`` plus those of ``then`` about fields ``first`` does not already mention."""
    seen = {f for f, _ in first}
    return first + [(f, m) for f, m in then if f not in seen]


def training_problems(train: Any, timescales: Any, user_train: Mapping[str, Any] | None = None) -> list[Problem]:
    """Settings that make a run train nothing (checked on validated ``train`` and ``timescales``).

    - every learning-rate multiplier zero (``timescales.backbone_lr = head_lr = 0``);
    - a warm-up longer than the experience it belongs to (the LR never gets near its maximum:
      a warm-up of 10**6 steps trains 100 steps at 1e-4 of it). Only warm-ups the user set
      (``user_train``: the config file and ``--set`` layers) are refused; a benchmark's
      default warm-up with a shorter ``train.steps`` (a quick smoke run) is allowed.
    """
    out: list[Problem] = []
    if timescales is not None and train is not None:
        scales = [getattr(timescales, k, 1.0) for k in ("backbone_lr", "head_lr")]
        if all(s == 0 for s in scales):
            out.append(
                (
                    "timescales.head_lr",
                    "every learning-rate multiplier is 0 (backbone_lr = head_lr = 0): nothing would be trained; "
                    "allowed: at least one > 0",
                )
            )
    if train is None:
        return out
    user = user_train if isinstance(user_train, Mapping) else {}
    user_phases = user.get("phases") if isinstance(user.get("phases"), list) else []
    n_phases = len(getattr(train, "phases", []) or [])
    for i in range(max(n_phases, 1)):
        t = train.for_experience(i) if n_phases else train
        mine = i < len(user_phases) and isinstance(user_phases[i], Mapping) and "warmup_steps" in user_phases[i]
        if not (mine or "warmup_steps" in user):
            continue
        steps, warm = t.steps, t.warmup_steps
        if steps is not None and steps > 0 and warm > steps:
            loc = f"train.phases.{i}.warmup_steps" if mine else "train.warmup_steps"
            out.append(
                (
                    loc,
                    f"a warm-up of {warm} steps is longer than the {steps} steps of experience {i}: the learning "
                    f"rate would never reach its maximum; allowed: 0 to {steps}",
                )
            )
    if n_phases and "warmup_steps" in user and train.steps and train.warmup_steps > train.steps:
        out.append(
            (
                "train.warmup_steps",
                f"a warm-up of {train.warmup_steps} steps is longer than the {train.steps} steps of the "
                f"experiences after the phases; allowed: 0 to {train.steps}",
            )
        )
    return list(dict(out).items())


def class_count_problems(bench: Any, n_classes: int | None, name: str) -> list[Problem]:
    """Sizes the data cannot give: more experiences or classes than the benchmark has classes."""
    if not n_classes:
        return []
    out: list[Problem] = []
    n_exp = getattr(bench, "n_experiences", None)
    if n_exp is not None and n_exp > n_classes:
        out.append(
            (
                "benchmark.n_experiences",
                f"{name} has {n_classes} classes, so at most {n_classes} class-split experiences; "
                f"got {n_exp}; allowed: 1 to {n_classes}",
            )
        )
    per = getattr(bench, "classes_per_exp", None)
    if isinstance(per, int) and not isinstance(per, bool) and not 1 <= per <= n_classes:
        out.append(
            ("benchmark.classes_per_exp", f"{name} has {n_classes} classes; got {per}; allowed: 1 to {n_classes}")
        )
    elif isinstance(per, list) and sum(p for p in per if isinstance(p, int)) > n_classes:
        out.append(
            (
                "benchmark.classes_per_exp",
                f"the sizes {per} add up to {sum(per)} classes but {name} has {n_classes}; "
                f"allowed: sizes >= 1 adding up to at most {n_classes}",
            )
        )
    first = getattr(bench, "first_classes", None)
    if first is not None and first > n_classes:
        out.append(
            ("benchmark.first_classes", f"{name} has {n_classes} classes; got {first}; allowed: 1 to {n_classes}")
        )
    return out
