"""bench/reproduce.py: a reduced run of the reproduction table, its cache, and its ordering checks."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "bench" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_reduced_table_runs_caches_and_reports(tmp_path):
    rp = load()
    out, cache = tmp_path / "results.md", tmp_path / "runs.json"
    args = [
        "--strategies", "naive,replay-power,icarl",
        "--settings", "split-mnist:class,split-mnist:task",
        "--seeds", "1",
        "--jobs", "1",
        "--set", "train.epochs=1",
        "--out", str(out),
        "--json", str(cache),
        "--notes", "",
    ]  # fmt: skip
    assert rp.main(args) == 0
    runs = json.loads(cache.read_text())["runs"]
    # icarl is class-incremental only: 2 settings x 2 strategies + 1 icarl run
    assert len(runs) == 5
    assert {r["strategy"] for r in runs} == {"naive", "replay-power", "icarl"}
    power = [r for r in runs if r["strategy"] == "replay-power"]
    assert all(r["config"]["strategy"]["schedule"] == "power" for r in power)
    text = out.read_text()
    assert "## split-mnist, class-incremental" in text and "## split-mnist, task-incremental" in text
    assert "| `icarl` | n/a | n/a | n/a | | scenario not supported |" in text
    assert "python bench/reproduce.py --strategies naive,replay-power,icarl" in text
    assert "torch:" in text and "`replay-power`: `replay` with `strategy.schedule=power`" in text

    # a second invocation finds every run in the cache and writes the same table
    before = text.split("## split-mnist, class-incremental")[1].split("## Orderings")[0]
    assert rp.main(args) == 0
    assert out.read_text().split("## split-mnist, class-incremental")[1].split("## Orderings")[0] == before


def row(acc: float) -> dict:
    return {"acc": (acc, 0.0), "forgetting": (0.0, 0.0), "bwt": (0.0, 0.0), "n": 3, "seconds": 1.0}


def test_ordering_checks_follow_the_literature():
    rp = load()
    ci, ti = "split-mnist:class", "split-mnist:task"
    good = {(ci, s): row(a) for s, a in {"naive": 0.2, "ewc": 0.2, "agem": 0.4, "replay": 0.85, "joint": 0.95}.items()}
    good |= {(ti, s): row(a) for s, a in {"naive": 0.9, "ewc": 0.97, "joint": 0.99}.items()}
    res = rp.checks(good)
    assert res and all(ok for _, ok, _ in res)
    bad = dict(good)
    bad[(ci, "agem")] = row(0.22)  # A-GEM no better than fine-tuning
    bad[(ti, "ewc")] = row(0.91)  # EWC closes little of the task-IL gap
    failed = {claim for claim, ok, _ in rp.checks(bad) if not ok}
    assert any("`agem` is clearly better" in c for c in failed)
    assert any("`ewc` closes most" in c for c in failed)
    assert not any("`replay` beats `agem`" in c for c in failed)
