"""Reproduction table: every registered strategy on the built-in benchmarks -> docs/results.md.

Runs every strategy on split-mnist in the class-, task- and domain-incremental scenarios and
on split-mnist1d class-incremental, with several seeds, each with the library's defaults
(benchmark training settings, strategy hyperparameters), and writes a Markdown report: final
accuracy, forgetting and BWT as mean ± standard error over seeds, the checks of the orderings
the literature reports (shared/REFERENCES.md), the exact command, the configuration and the
package versions.

    python bench/reproduce.py                          # the full table (3 seeds, 2 processes)
    python bench/reproduce.py --quick                  # reduced: class-IL split-mnist, 2 epochs, 1 seed
    python bench/reproduce.py --strategies naive,replay --settings split-mnist:task --seeds 2
    python bench/reproduce.py --ray --jobs 8                 # each run a Ray task (RAY_ADDRESS: a cluster)

Every finished run is saved at once in ``--json`` (default bench/results/reproduce.json);
running the command again skips runs whose exact configuration is already there, so an
interrupted table resumes where it stopped (``--fresh`` starts over; use it after changing a
strategy's code, since the cache key is the run's configuration, not the code). Unsupported
strategy/scenario pairs (e.g. iCaRL outside class-incremental learning) are left out and
marked ``n/a``. Each worker process uses one torch thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("split-mnist:class", "split-mnist:task", "split-mnist:domain", "split-mnist1d:class")
METRICS = ("acc", "forgetting", "bwt")
#: methods that only regularise (no memory of past data)
REGULARISERS = ("ewc", "online-ewc", "si", "mas", "lwf")
#: table order: lower bound, regularisation, gradient projection, replay family, upper bounds
ORDER = (
    "naive", "ewc", "online-ewc", "si", "mas", "lwf", "agem", "gem", "replay", "replay-power", "er-ace", "der",
    "derpp", "gdumb", "icarl", "bic", "ema-teacher", "cls-er", "slca", "simplecil", "first-session",
    "cumulative", "joint",
)  # fmt: skip
#: extra rows: a registered strategy with non-default options (label -> (name, config overrides))
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "replay-power": ("replay", ("strategy.schedule=power",)),
}


def resolve(label: str) -> tuple[str, tuple[str, ...]]:
    """A table row's strategy name and the overrides it adds."""
    return VARIANTS.get(label, (label, ()))


# ---------------------------------------------------------------------------------- runs
def job_config(setting: str, strategy: str, seed: int, overrides: Sequence[str]) -> Any:
    from perennial.config import build_config

    bench, scenario = setting.split(":")
    return build_config(benchmark=bench, scenario=scenario, strategy=strategy, seed=seed, overrides=list(overrides))


#: config keys that never change a run's metrics, left out of the cache key (so adding them
#: to the config does not invalidate the cache): which cells of the matrix are measured
NEUTRAL_KEYS = (("eval", "after_experience"),)


def job_key(cfg: Any) -> str:
    d = cfg.to_dict()
    for section, key in NEUTRAL_KEYS:
        d.get(section, {}).pop(key, None)
    if d.get("eval", {}).get("after_experience_samples", 0) is None:
        d["eval"].pop("after_experience_samples")  # unset: every test sample, as before the key existed
    text = json.dumps(d, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_job(setting: str, label: str, seed: int, overrides: Sequence[str]) -> dict[str, Any]:
    import torch

    from perennial import api

    torch.set_num_threads(1)
    name, extra = resolve(label)
    cfg = job_config(setting, name, seed, [*extra, *overrides])
    rec = api.run(cfg)
    return {
        "key": job_key(cfg),
        "setting": setting,
        "strategy": label,
        "seed": seed,
        "metrics": {k: rec.metrics.get(k) for k in (*METRICS, "avg_inc_acc", "learning_acc", "fwt")},
        "accuracy_matrix": rec.accuracy_matrix,
        "seconds": rec.seconds,
        "config": cfg.to_dict(),
    }


def supported(label: str, setting: str) -> bool:
    from perennial.strategies import STRATEGIES

    return setting.split(":")[1] in STRATEGIES.get(resolve(label)[0]).scenarios


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {r["key"]: r for r in data.get("runs", [])}


def save_cache(path: Path, runs: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"runs": list(runs.values())}, indent=1))
    os.replace(tmp, path)  # atomic: a kill never leaves half a file


# ------------------------------------------------------------------------------- summary
def mean_sem(xs: Sequence[float]) -> tuple[float, float | None]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["setting"], r["strategy"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        row: dict[str, Any] = {"n": len(rs), "seconds": sum(r["seconds"] for r in rs) / len(rs)}
        for m in METRICS:
            row[m] = mean_sem([r["metrics"][m] for r in rs])
        out[key] = row
    return out


def pct(v: tuple[float, float | None] | None) -> str:
    if v is None:
        return "n/a"
    m, s = v
    return f"{100 * m:.1f}" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def checks(table: dict[tuple[str, str], dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The orderings REFERENCES.md reports, checked on the measured means (skipped if absent)."""
    out: list[tuple[str, bool, str]] = []

    def acc(setting: str, s: str) -> float | None:
        row = table.get((setting, s))
        return None if row is None else row["acc"][0]

    ci = "split-mnist:class"
    naive = acc(ci, "naive")
    for s in REGULARISERS:
        a = acc(ci, s)
        if a is not None:
            out.append(
                (f"class-IL: `{s}` stays near the single-experience level (<= 30%)", a <= 0.30, f"{100 * a:.1f}%")
            )
    agem = acc(ci, "agem")
    if agem is not None and naive is not None:
        out.append(
            (
                "class-IL: `agem` is clearly better than `naive` (+10 points)",
                agem >= naive + 0.10,
                f"{100 * agem:.1f}% vs {100 * naive:.1f}%",
            )
        )
    reg = [a for s in REGULARISERS if (a := acc(ci, s)) is not None]
    for s in ("replay", "er-ace", "der", "derpp", "icarl"):
        a = acc(ci, s)
        if a is None:
            continue
        if agem is not None:
            out.append((f"class-IL: `{s}` beats `agem`", a > agem, f"{100 * a:.1f}% vs {100 * agem:.1f}%"))
        if reg:
            out.append(
                (
                    f"class-IL: `{s}` is far above the regularisers (+40 points)",
                    a >= max(reg) + 0.40,
                    f"{100 * a:.1f}% vs at most {100 * max(reg):.1f}%",
                )
            )
    joint = acc(ci, "joint")
    if joint is not None:
        others = {
            s: a
            for (st, s), row in table.items()
            if st == ci and s not in ("joint", "cumulative")
            for a in [row["acc"][0]]
        }
        if others:
            best = max(others, key=others.__getitem__)
            out.append(
                (
                    "class-IL: `joint` is the best (of the continual methods)",
                    joint >= others[best],
                    f"joint {100 * joint:.1f}%, best other `{best}` {100 * others[best]:.1f}%",
                )
            )
    ti = "split-mnist:task"
    t_naive, t_joint = acc(ti, "naive"), acc(ti, "joint")
    if t_naive is not None and t_joint is not None and t_joint > t_naive:
        for s in REGULARISERS:
            a = acc(ti, s)
            if a is not None:
                closed = (a - t_naive) / (t_joint - t_naive)
                out.append(
                    (
                        f"task-IL: `{s}` closes most (>= 50%) of the naive-to-joint gap",
                        closed >= 0.5,
                        f"{100 * closed:.0f}% closed ({100 * a:.1f}% vs naive {100 * t_naive:.1f}%, "
                        f"joint {100 * t_joint:.1f}%)",
                    )
                )
    return out


def report(
    runs: Sequence[dict[str, Any]],
    strategies: Sequence[str],
    settings: Sequence[str],
    command: str,
    seeds: Sequence[int],
    wall: float | None,
    notes: str = "",
) -> str:
    from perennial import api
    from perennial.strategies import STRATEGIES
    from perennial.streams import BENCHMARKS

    table = aggregate(runs)
    lines = [
        "# Reproduction report: the strategy zoo on the built-in benchmarks",
        "",
        "Generated by `bench/reproduce.py` (do not edit by hand). Every strategy runs with the",
        "library's defaults: the benchmark's training settings and the strategy's documented",
        "hyperparameters (listed below). Final accuracy `acc` (mean over experiences after the last",
        "one), `forgetting` (max-minus-last, Chaudhry et al. 2018) and `bwt` (Lopez-Paz & Ranzato",
        f"2017), in %, as mean ± standard error of the mean over seeds {', '.join(str(s) for s in seeds)}.",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    total = sum(r["seconds"] for r in runs)
    lines += [
        f"{len(runs)} runs; the sum of their own times is {total / 60:.0f} min, i.e. about {total / 120:.0f} min of "
        "wall time with the default 2 worker processes (`s/run` below is each run's own time)."
        + (
            f" Wall time of the last invocation: {wall / 60:.1f} min (runs found in the cache are not re-run)."
            if wall
            else ""
        ),
        "",
    ]
    for setting in settings:
        bench, scenario = setting.split(":")
        lines += [
            f"## {bench}, {scenario}-incremental",
            "",
            "| strategy | acc | forgetting | bwt | s/run | seeds |",
            "|---|---|---|---|---|---|",
        ]
        for s in strategies:
            row = table.get((setting, s))
            if row is None:
                why = "scenario not supported" if not supported(s, setting) else "not run"
                lines.append(f"| `{s}` | n/a | n/a | n/a | | {why} |")
                continue
            lines.append(
                f"| `{s}` | {pct(row['acc'])} | {pct(row['forgetting'])} | {pct(row['bwt'])} | "
                f"{row['seconds']:.1f} | {row['n']} |"
            )
        lines.append("")
    res = checks(table)
    if res:
        ok = sum(1 for _, good, _ in res if good)
        lines += [
            "## Orderings from the literature",
            "",
            f"{ok} of {len(res)} checks hold (REFERENCES.md: van de Ven et al. 2019/2022 on Split MNIST).",
            "",
            "| claim | holds | measured |",
            "|---|---|---|",
        ]
        lines += [f"| {claim} | {'yes' if good else '**no**'} | {detail} |" for claim, good, detail in res]
        lines.append("")
    if notes.strip():
        lines += [notes.strip(), ""]
    section = protocols_section()
    if section:  # bench/protocols.py's runs with the --protocol presets (kept when this file is rewritten)
        lines += [section, ""]
    lines += ["## Configuration", "", "Benchmark training settings (each run's full config is in the JSON cache):", ""]
    for b in sorted({s.split(":")[0] for s in settings}):
        lines.append(f"- `{b}`: {json.dumps(BENCHMARKS.get(b).defaults, sort_keys=True)}")
    lines += [
        "",
        "Strategy hyperparameters (defaults; where they come from is in each strategy's docstring "
        "and docs/strategies.md):",
        "",
    ]
    for s in strategies:
        name, extra = resolve(s)
        params = STRATEGIES.get(name)().model_dump()
        text = json.dumps(params, sort_keys=True) if params else "(none)"
        if extra:
            text = f"`{name}` with {', '.join(f'`{o}`' for o in extra)}"
        lines.append(f"- `{s}`: {text}")
    v = api.versions()
    lines += ["", "## Versions", "", *[f"- {k}: {val}" for k, val in v.items()], ""]
    return "\n".join(lines)


def protocols_section() -> str | None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from protocols import section_from_cache
    finally:
        sys.path.pop(0)
    return section_from_cache()


# ---------------------------------------------------------------------------------- main
class _RayExecutor:
    """``submit`` like an executor, each call a Ray task (its ObjectRef's future works with
    ``as_completed``); at most ``jobs`` at a time through the local instance's CPU count, or
    one CPU per task on a cluster."""

    def __init__(self, jobs: int, address: str | None):
        from perennial.scale.ray_runs import RayPool

        self._pool = RayPool(max(1, jobs), address=address)  # starts or joins Ray, clear errors
        import ray

        self._remote = ray.remote(num_cpus=1, max_retries=2)(run_job)

    def submit(self, fn: Any, *args: Any) -> Any:
        assert fn is run_job
        return self._remote.remote(*args).future()

    def __enter__(self) -> _RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.close()


def _executor(args: argparse.Namespace) -> Any:
    if args.ray or args.ray_address:
        return _RayExecutor(args.jobs, args.ray_address)
    return ProcessPoolExecutor(max_workers=max(1, args.jobs))


def main(argv: Sequence[str] | None = None) -> int:
    from perennial.strategies import STRATEGIES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    every = [n for n in ORDER if n in STRATEGIES or n in VARIANTS] + [n for n in STRATEGIES.names() if n not in ORDER]
    ap.add_argument("--strategies", default=",".join(every), help="comma-separated (default: all)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="benchmark:scenario pairs, comma-separated")
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+N-1 (default 0)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes, one torch thread each (default 2)")
    ap.add_argument(
        "--ray",
        action="store_true",
        help="run each run as a Ray task, --jobs at a time (local Ray, or --ray-address / RAY_ADDRESS)",
    )
    ap.add_argument("--ray-address", default=None, help="existing Ray cluster (HOST:PORT); implies --ray")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, e.g. train.epochs=2")
    ap.add_argument("--quick", action="store_true", help="reduced: split-mnist class-IL, 2 epochs, 1 seed")
    ap.add_argument("--out", help="Markdown report (default docs/results.md; with --quick bench/results/quick.md)")
    ap.add_argument("--json", help="run cache (default bench/results/reproduce.json; with --quick .../quick.json)")
    ap.add_argument("--fresh", action="store_true", help="ignore runs already in the cache")
    ap.add_argument("--prune", action="store_true", help="drop cached runs this table does not use (stale configs)")
    ap.add_argument(
        "--notes",
        default=str(ROOT / "bench" / "reproduce_notes.md"),
        help="hand-written discussion inserted after the checks (skipped if the file is missing)",
    )
    args = ap.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    overrides = list(args.overrides)
    if args.quick:
        settings, seeds = ["split-mnist:class"], seeds[:1]
        overrides = ["train.epochs=2", *overrides]
    # the reduced table never touches the committed report and cache
    stem = "quick" if args.quick else None
    args.out = args.out or str(ROOT / "bench" / "results" / "quick.md" if stem else ROOT / "docs" / "results.md")
    args.json = args.json or str(ROOT / "bench" / "results" / ("quick.json" if stem else "reproduce.json"))
    unknown = [s for s in strategies if resolve(s)[0] not in STRATEGIES]
    bad = [s for s in settings if s.count(":") != 1]
    if unknown or bad:
        print(
            f"error: unknown strategies {unknown} or malformed settings {bad} (use benchmark:scenario)", file=sys.stderr
        )
        return 2

    cache_path = Path(args.json)
    cache = {} if args.fresh else load_cache(cache_path)
    jobs, runs = [], {}
    for setting in settings:
        for s in strategies:
            if not supported(s, setting):
                continue
            for seed in seeds:
                name, extra = resolve(s)
                key = job_key(job_config(setting, name, seed, [*extra, *overrides]))
                if key in cache:
                    runs[key] = cache[key]
                else:
                    jobs.append((setting, s, seed))
    print(f"{len(runs)} runs cached, {len(jobs)} to run with {args.jobs} process(es)", file=sys.stderr)
    t0 = time.perf_counter()
    with _executor(args) as pool:
        futures = {pool.submit(run_job, *job, overrides): job for job in jobs}
        for i, fut in enumerate(as_completed(futures), 1):
            rec = fut.result()
            runs[rec["key"]] = rec
            cache[rec["key"]] = rec
            save_cache(cache_path, cache)
            print(
                f"[{i}/{len(jobs)}] {rec['setting']} {rec['strategy']} seed {rec['seed']}: "
                f"acc {100 * rec['metrics']['acc']:.1f}% ({rec['seconds']:.1f} s)",
                file=sys.stderr,
            )
    wall = time.perf_counter() - t0
    if args.prune and len(cache) > len(runs):
        print(f"pruned {len(cache) - len(runs)} cached runs this table does not use", file=sys.stderr)
        save_cache(cache_path, runs)
    command = "python bench/reproduce.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    notes = Path(args.notes).read_text() if args.notes and Path(args.notes).is_file() else ""
    text = report(list(runs.values()), strategies, settings, command.strip(), seeds, wall if jobs else None, notes)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out} ({len(runs)} runs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
