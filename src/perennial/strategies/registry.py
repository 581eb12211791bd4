"""The strategy registry and the parser for strategy specs like ``"replay+ewc"``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from perennial.errors import ConfigError
from perennial.registry import Registry
from perennial.strategies.base import Strategy
from perennial.strategies.compose import compose
from perennial.validation import merge_problems, numeric_problems

S = TypeVar("S", bound=type[Strategy])


def _adapt_strategy(name: str, obj: Any) -> type[Strategy]:
    """A plug-in strategy (``package.module:ClassName`` or an entry point) is a Strategy subclass."""
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise ValueError(
            f"is {type(obj).__name__} {obj!r}, not a Strategy subclass; point it at a class like "
            "'class MyStrategy(perennial.strategies.Strategy)'"
        )
    if not obj.name:  # unregistered class: known by the name it was loaded under (a subclass, so
        # that the user's class is not changed and two names of it stay two strategies)
        return type(obj.__name__, (obj,), {"name": name, "__module__": obj.__module__, "__doc__": obj.__doc__})
    return obj


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", group="perennial.strategies", adapt=_adapt_strategy)


def register(name: str) -> Callable[[S], S]:
    """Class decorator: ``@register("replay") class Replay(Strategy): ...``."""

    def deco(cls: S) -> S:
        cls.name = name
        STRATEGIES.add(name, cls)
        return cls

    return deco


def pydantic_problems(err: ValidationError, prefix: str, model: type | None = None) -> list[tuple[str, str]]:
    """Turn a pydantic error into ``(field, message)`` pairs with the bad value shown.

    With ``model`` given, an unknown top-level key gets the closest known field names.
    """
    import difflib

    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            fields = list(getattr(model, "model_fields", {})) if len(e["loc"]) == 1 else []
            if fields:
                close = difflib.get_close_matches(str(e["loc"][0]), fields, n=2, cutoff=0.5)
                hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
                msg = f"unknown key; {hint}known: {', '.join(fields)}"
        elif "input" in e and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        out.append((loc, msg))
    return out


def parse_spec(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split("+")]
    if not spec.strip() or any(not n for n in names):
        raise ConfigError(
            [("strategy", f"invalid strategy spec {spec!r}; use a name or names joined by '+', e.g. replay+ewc")]
        )
    return names


def make_strategy(spec: str, params: Mapping[str, Any] | None = None, *, field: str = "strategy") -> Strategy:
    """Build a strategy (or a composition) from ``"name[+name...]"`` and parameters.

    ``params`` keys are either a parameter name, routed to the one member that declares it,
    or ``"member.param"`` to address one member of a composition explicitly. All problems
    (unknown names, unknown or ambiguous keys, invalid values) are reported together.
    """
    names = parse_spec(spec)
    problems: list[tuple[str, str]] = []
    classes: list[type[Strategy]] = []
    for n in names:
        try:
            classes.append(STRATEGIES.get(n, field=field))
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    if len(set(names)) != len(names):
        raise ConfigError([(field, f"strategy {spec!r} names a method twice")])

    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in (params or {}).items():
        member = next((n for n in names if key.startswith(n + ".")), None)  # plug-in names hold dots
        if member is not None:
            per[member][key[len(member) + 1 :]] = value
            continue
        owners = [n for n, c in zip(names, classes, strict=True) if key in c.model_fields]
        if len(owners) == 1:
            per[owners[0]][key] = value
        elif len(owners) > 1:
            problems.append(
                (
                    f"{field}.{key}",
                    f"ambiguous: {', '.join(owners)} all take {key!r}; write "
                    + " or ".join(f"{field}.{o}.{key}" for o in owners),
                )
            )
        else:
            known = sorted({f for c in classes for f in c.model_fields})
            import difflib

            close = difflib.get_close_matches(key, known, n=2, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            takers = [n for n, c in STRATEGIES.items() if key in c.model_fields]
            taken = f"; {key!r} is a parameter of {', '.join(takers)}" if takers else ""
            problems.append(
                (
                    f"{field}.{key}",
                    f"unknown parameter for {spec!r}; {hint}known: {', '.join(known) or '(none)'}{taken}",
                )
            )
    built = []
    for n, cls in zip(names, classes, strict=True):
        prefix = f"{field}.{n}" if len(names) > 1 else field
        numeric = numeric_problems(cls, per[n], prefix)  # booleans as numbers, inf, integers too big
        try:
            built.append(cls(**per[n]))
        except ValidationError as err:
            problems += merge_problems(numeric, pydantic_problems(err, prefix, cls))
        else:
            problems += numeric
    if problems:
        raise ConfigError(problems)
    return compose(*built)
