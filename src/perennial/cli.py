"""The ``perennial`` command line: parse -> validate config -> call the API -> print / exit code.

Every expected failure (bad config, unknown names, bad data, missing runs) ends with a short
message on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from perennial.errors import ConfigError, PerennialError

app = typer.Typer(
    name="perennial",
    help="Continual learning you can measure: train on shifting streams, compare strategies, keep every result.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
list_app = typer.Typer(help="List registered names (one per line).", no_args_is_help=True)
app.add_typer(list_app, name="list")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DEFAULT_STORE = "perennial-runs"

StoreOpt = Annotated[Path, typer.Option("--store", help="Run store directory (created if missing).", show_default=True)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config value, e.g. --set strategy.buffer_size=200 --set train.epochs=3 (repeatable)."
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (TOML or JSON) with seed/benchmark/model/strategy/train/timescales tables."
    ),
]
ScenarioOpt = Annotated[
    str | None, typer.Option("--scenario", help="class, task or domain (default: the benchmark's own).")
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write a JSON summary to this file ('-' for stdout).")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar and no tables; errors still go to stderr.")
]


@contextlib.contextmanager
def errors_to_exit(run_hint: str | None = None) -> Iterator[None]:
    try:
        yield
    except PerennialError as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        msg = "interrupted"
        if run_hint:
            msg += f"; results measured so far are in the store ({run_hint})"
        err.print(f"[yellow]{msg}[/]")
        raise typer.Exit(130) from None
    except OSError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None


def _store(path: Path) -> Any:
    from perennial.store import RunStore

    return RunStore(path)


def _progress(quiet: bool) -> Any:
    from perennial.train import NoProgress, RichProgress

    if quiet or not sys.stderr.isatty():
        return contextlib.nullcontext(NoProgress())
    return RichProgress(console=err)


def _write_json(path: Path, data: Any) -> None:
    from perennial.store import dumps

    text = json.dumps(json.loads(dumps(data)), indent=2)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def _pct(x: float | None, sem: float | None = None) -> str:
    if x is None:
        return "–"
    s = f"{100 * x:.1f}"
    return s if sem is None else f"{s}±{100 * sem:.1f}"


def _matrix_table(rec: Any) -> Table:
    n = len(rec.random_init_acc) or (len(rec.accuracy_matrix[0]) if rec.accuracy_matrix else 0)
    names = rec.config.get("experience_names") or [f"exp{j}" for j in range(n)]
    t = Table(title=f"accuracy (%) after each experience — {rec.run_id}", title_justify="left")
    t.add_column("trained on", style="bold")
    for name in names:
        t.add_column(name, justify="right")
    if rec.random_init_acc:
        t.add_row("(initial)", *[_pct(a) for a in rec.random_init_acc], style="dim")
    for i, row in enumerate(rec.accuracy_matrix):
        t.add_row(
            names[i] if i < len(names) else str(i),
            *[_pct(a) if j <= i else f"[dim]{_pct(a)}[/]" for j, a in enumerate(row)],
        )
    return t


def _metrics_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="metrics", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("acc", "avg_inc_acc", "forgetting", "bwt", "fwt", "learning_acc"):
        if k in metrics:
            t.add_row(k, _pct(metrics[k]) if metrics[k] is not None else "–")
    return t


#: columns of the compare table (the JSON has every metric, avg_inc_acc included)
TABLE_METRICS = ("acc", "forgetting", "bwt", "fwt", "learning_acc")

METRIC_HELP = (
    "acc: final average accuracy; forgetting: max-minus-last (Chaudhry); bwt/fwt: backward/forward "
    "transfer; learning_acc: mean of R[i,i]. All in %."
)


@app.command()
def run(
    benchmark: Annotated[
        str | None,
        typer.Option("--benchmark", "-b", help="Benchmark name (perennial list benchmarks). Default: split-mnist."),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy", "-s", help="Strategy name, or several joined by '+' (e.g. replay+ewc). Default: naive."
        ),
    ] = None,
    scenario: ScenarioOpt = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (model init, data order, buffers). Default: 0.")
    ] = None,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = Path(DEFAULT_STORE),
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name of the run in the store (default: generated).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run with the same --run-id.")
    ] = False,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train one strategy on one benchmark, print the accuracy matrix and metrics, record the run.

    Example: perennial run -b split-mnist -s replay --set strategy.buffer_size=200 --json out.json
    """
    from perennial import api
    from perennial.config import build_config

    with errors_to_exit(f"--store {store}"):
        cfg = build_config(config, set_ or (), benchmark=benchmark, strategy=strategy, scenario=scenario, seed=seed)
        st = _store(store)
        with _progress(quiet) as progress:
            rec = api.run(cfg, store=st, run_id=run_id, progress=progress, overwrite=overwrite)
        if not quiet:
            out.print(_matrix_table(rec))
            out.print(_metrics_table(rec.metrics or {}))
            out.print(METRIC_HELP, style="dim", markup=False)
            out.print(f"run [bold]{rec.run_id}[/] recorded in {store} ({rec.seconds:.1f} s)")
        if json_out is not None:
            _write_json(json_out, rec.summary())


@app.command()
def compare(
    strategies: Annotated[
        str, typer.Option("--strategies", help="Comma-separated strategies; each may be a composition like replay+ewc.")
    ] = "naive,ewc,lwf,replay,joint",
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", "-b", help="Benchmark name. Default: split-mnist.")
    ] = None,
    scenario: ScenarioOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Number of seeds per strategy.")] = 3,
    seed: Annotated[int, typer.Option("--seed", min=0, help="First seed (seeds are SEED..SEED+N-1).")] = 0,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = Path(DEFAULT_STORE),
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run several strategies over several seeds; print mean ± standard error per metric.

    Example: perennial compare -b split-mnist --strategies naive,ewc,lwf,replay,joint --seeds 3
    """
    from perennial import api
    from perennial.config import build_config

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    with errors_to_exit(f"--store {store}"):
        if not names:
            raise ConfigError([("--strategies", "give at least one strategy, e.g. --strategies naive,replay")])
        # Validate every strategy's config before running anything.
        problems: list[tuple[str, str]] = []
        cfgs: dict[str, Any] = {}
        for name in names:
            try:
                cfgs[name] = build_config(
                    config, set_ or (), benchmark=benchmark, strategy=name, scenario=scenario, seed=seed
                )
            except ConfigError as e:
                problems += [(f"[{name}] {f}", m) for f, m in e.problems]
        if problems:
            raise ConfigError(problems)
        st = _store(store)
        seed_list = list(range(seed, seed + seeds))
        t0 = time.perf_counter()
        total = len(names) * len(seed_list)
        done = [0]

        def on_run(rec: Any) -> None:
            done[0] += 1
            if not quiet:
                acc = _pct((rec.metrics or {}).get("acc"))
                err.print(
                    f"[{done[0]}/{total}] {rec.strategy} seed {rec.seed}: acc {acc.strip()}% ({rec.seconds:.1f} s)",
                    soft_wrap=True,
                    markup=False,
                )

        with _progress(quiet) as progress:
            res = api.compare(
                lambda name, s: cfgs[name].model_copy(update={"seed": s}),
                names,
                seed_list,
                store=st,
                progress=progress,
                on_run=on_run,
            )
        if not quiet:
            first = res.runs[0]
            t = Table(
                title=f"{first.benchmark} ({first.scenario}-incremental), {len(seed_list)} seed(s): mean ± s.e.m. (%)",
                title_justify="left",
            )
            t.add_column("strategy", style="bold", no_wrap=True)
            for m in TABLE_METRICS:
                t.add_column(m.replace("learning_acc", "learn_acc"), justify="right", no_wrap=True)
            t.add_column("s/run", justify="right", no_wrap=True)
            for row in res.rows:
                t.add_row(
                    row["strategy"],
                    *[_pct(row[f"{m}_mean"], row[f"{m}_sem"]) for m in TABLE_METRICS],
                    f"{row['seconds_mean']:.1f}",
                )
            out.print(t)
            out.print(METRIC_HELP, style="dim", markup=False)
            out.print(f"{len(res.runs)} runs recorded in {store} in {time.perf_counter() - t0:.0f} s")
        if json_out is not None:
            _write_json(json_out, res.to_dict())


@app.command()
def runs(
    store: StoreOpt = Path(DEFAULT_STORE),
    benchmark: Annotated[str | None, typer.Option("--benchmark", "-b", help="Only runs on this benchmark.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", "-s", help="Only runs of this strategy.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only runs with this status (running, finished, failed, interrupted)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many (newest first).")] = 50,
    json_out: JsonOpt = None,
) -> None:
    """List stored runs, newest first."""
    with errors_to_exit():
        recs = _store(store).list(benchmark=benchmark, strategy=strategy, status=status, limit=limit)
        if json_out is not None:
            _write_json(
                json_out,
                {"runs": [{k: v for k, v in r.summary().items() if k not in ("config", "versions")} for r in recs]},
            )
            return
        if not recs:
            out.print(f"no runs in {store}; start one with: perennial run --benchmark split-mnist --strategy replay")
            return
        t = Table(title=f"runs in {store}", title_justify="left")
        for c in ("run id", "status", "benchmark", "scenario", "strategy", "seed", "acc %", "seconds", "created"):
            t.add_column(c, justify="right" if c in ("seed", "acc %", "seconds") else "left")
        for r in recs:
            t.add_row(
                r.run_id,
                r.status,
                r.benchmark,
                r.scenario,
                r.strategy,
                str(r.seed),
                _pct((r.metrics or {}).get("acc")),
                f"{r.seconds:.1f}" if r.seconds is not None else "–",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
            )
        out.print(t)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="Run id (see: perennial runs).")],
    store: StoreOpt = Path(DEFAULT_STORE),
    json_out: JsonOpt = None,
) -> None:
    """Show one stored run: config, accuracy matrix, metrics."""
    with errors_to_exit():
        rec = _store(store).get(run_id)
        if json_out is not None:
            _write_json(json_out, rec.summary())
            return
        out.print(
            f"[bold]{rec.run_id}[/]  status={rec.status}  {rec.benchmark}/{rec.scenario}  strategy={rec.strategy}  seed={rec.seed}"
        )
        if rec.error:
            out.print(f"[red]{rec.error}[/]")
        out.print(_matrix_table(rec))
        if rec.metrics:
            out.print(_metrics_table(rec.metrics))
        out.print("config: " + json.dumps(rec.config, sort_keys=True))


@list_app.command("strategies")
def list_strategies(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add scenarios and a description.")] = False,
) -> None:
    """Registered strategies."""
    from perennial.strategies import STRATEGIES

    for name, cls in STRATEGIES.items():
        if verbose:
            out.print(f"{name:<14} [{','.join(sorted(cls.scenarios))}] {cls.summary}")
        else:
            out.print(name)


@list_app.command("benchmarks")
def list_benchmarks(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add scenarios and a description.")] = False,
) -> None:
    """Built-in benchmarks."""
    from perennial.streams import BENCHMARKS

    for name, b in BENCHMARKS.items():
        out.print(f"{name:<16} [{','.join(b.scenarios)}] {b.description}" if verbose else name)


@list_app.command("models")
def list_models(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add a description.")] = False) -> None:
    """Model builders."""
    from perennial.models import MODELS

    for name, m in MODELS.items():
        out.print(f"{name:<8} {m.description}" if verbose else name)


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
