"""Docs stay true to the code: generated reference tables, runnable examples, README claims."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from perennial.config import build_config, load_config_file, reference_markdown
from perennial.strategies import STRATEGIES
from perennial.streams import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current():
    text = (ROOT / "docs" / "configuration.md").read_text()
    m = re.search(r"<!-- reference:start -->\n(.*)<!-- reference:end -->", text, re.S)
    assert m, "docs/configuration.md lost its reference markers"
    assert m.group(1) == reference_markdown(), (
        "docs/configuration.md is stale; regenerate it with: python tests/test_docs.py"
    )


def test_every_strategy_and_benchmark_is_documented():
    readme = (ROOT / "README.md").read_text()
    strategies_doc = (ROOT / "docs" / "strategies.md").read_text()
    for name in STRATEGIES:
        assert f"`{name}`" in strategies_doc, f"docs/strategies.md does not describe {name}"
    for name in BENCHMARKS:
        assert f"`{name}`" in readme, f"README does not list benchmark {name}"


def test_example_config_is_valid():
    cfg = build_config(load_config_file(ROOT / "examples" / "replay_ewc.toml"))
    assert cfg.strategy.name == "replay+ewc"
    lm = build_config(load_config_file(ROOT / "examples" / "lm_phases.toml"))
    assert lm.benchmark.name == "text-domains" and [p.name for p in lm.train.phases] == ["pretrain", "c", "python"]
    cfg = build_config(load_config_file(ROOT / "examples" / "fast_slow.toml"))
    assert cfg.timescales.teachers == {"stable": 0.98, "plastic": 0.9} and cfg.timescales.predict_with == "stable"


def _tables(text: str) -> list[dict[str, list[str]]]:
    """Every Markdown table of ``text`` whose first column is a backticked label: label -> cells."""
    tables: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is None:
            current = {}
            tables.append(current)
        if cells[0].startswith("`"):
            current[cells[0]] = cells[1:]
    return [t for t in tables if t]


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_numbers_in_prose_come_from_the_result_tables():
    """One source of truth: README and fast-and-slow.md quote the reproduction table's numbers."""
    results = (ROOT / "docs" / "results.md").read_text()
    fast_slow = (ROOT / "docs" / "fast-and-slow.md").read_text()
    readme = (ROOT / "README.md").read_text()
    (zoo,) = _tables(_section(results, "## split-mnist, class-incremental"))[:1]
    fs_tables = _tables(_section(fast_slow, "## Results"))
    # the same configuration (a strategy at its defaults, 2 digits per experience) has one set of numbers
    shared = [k for k in fs_tables[0] if k in zoo]
    assert {"`replay`", "`cls-er`"} <= set(shared)
    for label in shared:
        assert fs_tables[0][label][:2] == zoo[label][:2], f"fast-and-slow.md's {label} differs from results.md"
    # every `name` NN.N% in the README's fast-and-slow paragraph is a table's accuracy
    para = readme.split("On split-mnist (3 seeds):", 1)[1].split("\n\n", 1)[0]
    quoted = re.findall(r"(`[^`]+`) (\d+\.\d)%", para)
    assert len(quoted) >= 5
    for label, value in quoted:
        accs = {t[label][0].split(" ")[0] for t in [zoo, *fs_tables] if label in t}
        assert value in accs, f"README quotes {label} {value}%, the tables say {sorted(accs)}"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_examples_run(script):
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--epochs", "2"], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr


def regenerate() -> None:  # pragma: no cover - used by hand: python tests/test_docs.py
    path = ROOT / "docs" / "configuration.md"
    text = path.read_text()
    new = re.sub(
        r"(<!-- reference:start -->\n).*(<!-- reference:end -->)",
        lambda m: m.group(1) + reference_markdown() + m.group(2),
        text,
        flags=re.S,
    )
    path.write_text(new)


if __name__ == "__main__":  # pragma: no cover
    regenerate()
