"""Imports point downward only (DESIGN.md): a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import perennial

ROOT = Path(perennial.__file__).parent
#: lowest first; "errors", "registry", "seeding" and the input guards ("validation": numeric
#: config checks, "files": safe file reading, "resources": memory estimates) are shared
#: foundations usable from anywhere
LAYERS = [
    "streams",
    "models",
    "evaluation",
    "memory",
    "strategies",
    "adaptation",
    "train",
    "store",
    "protocols",
    "config",
    "api",
    "experiments",
    "adapt_api",
    "report",
    "tracking",
    "scale",
    "cli",
]
BASE = {"errors", "registry", "seeding", "validation", "files", "resources", "catalog", "__init__", "__main__"}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "perennial" or len(parts) < 2:
        return None
    return parts[1]


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_imports_point_downward():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        own = rel.parts[0].removesuffix(".py")
        if own in BASE:
            continue
        assert own in LAYERS, f"{rel}: module outside the known layers; add it to LAYERS"
        for mod in imports(path):
            other = layer_of(mod)
            if other is None or other in BASE or other == own:
                continue
            if LAYERS.index(other) > LAYERS.index(own):
                bad.append(f"{rel} imports {mod} ({own} < {other})")
    assert not bad, "\n".join(bad)
