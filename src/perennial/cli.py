"""The ``perennial`` command line: parse -> validate config -> call the API -> print / exit code.

Every expected failure (bad config, unknown names, bad data, missing runs) ends with a short
message on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from perennial.errors import ConfigError, PerennialError, RunInterrupted

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

# Piped output gets a wide console so tables are not truncated to 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
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
ProtocolOpt = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        help="A published training setting as a preset (perennial list protocols -v); --set and flags override it.",
    ),
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write a JSON summary to this file ('-' for stdout).")]
EvalEveryOpt = Annotated[
    int | None,
    typer.Option(
        "--eval-every",
        min=1,
        help="Continual evaluation: evaluate every seen experience every N training steps (stability gap, min-ACC).",
    ),
]
EvalBudgetOpt = Annotated[
    int | None,
    typer.Option("--eval-budget", min=1, help="Continual evaluation: test samples per experience (default 300)."),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar and no tables; errors still go to stderr.")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model name (perennial list models), e.g. tiny-gpt, or your factory package.module:function "
        "(docs/your-own-model.md). Default: the benchmark's.",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        max=1024,
        help="torch CPU threads (config key: threads). Default: one per core; on a busy, shared machine use 1 or 2.",
    ),
]
TextDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--text-dir", help="Your text domains: a folder with one sub-folder per domain (implies -b text-domains)."
    ),
]
MlflowOpt = Annotated[
    str | None,
    typer.Option(
        "--mlflow",
        help="Also log each finished run to MLflow at this tracking URI (offline: sqlite:///mlflow.db or "
        "file:./mlruns): params, metrics, matrices, curves, HTML report (docs/scale-out.md).",
    ),
]
MlflowExpOpt = Annotated[str, typer.Option("--mlflow-experiment", help="MLflow experiment name.")]
TensorboardOpt = Annotated[
    Path | None,
    typer.Option("--tensorboard", help="Also write TensorBoard event files of each finished run into DIR/RUN_ID."),
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Run N runs at a time as Ray tasks (local Ray unless --ray-address/RAY_ADDRESS); 1: in this process.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address", help="Use an existing Ray cluster (HOST:PORT or ray://HOST:PORT); default RAY_ADDRESS."
    ),
]
CpusOpt = Annotated[float, typer.Option("--cpus-per-run", help="Ray: CPUs (and torch threads) per run.")]
GpusOpt = Annotated[float, typer.Option("--gpus-per-run", help="Ray: GPUs per run (fractions share a GPU).")]
RetriesOpt = Annotated[
    int, typer.Option("--retries", help="Ray: attempts again a failed or killed run this often (from its checkpoint).")
]
CheckpointDirOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint-dir",
        help="Ray: checkpoint folder every worker can reach (default: the store's); a shared filesystem on a cluster.",
    ),
]
NprocOpt = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="Train this one run data-parallel on N processes (runs torchrun --nproc-per-node N; gloo on CPU, "
        "nccl on GPUs).",
    ),
]


def _in_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _torchrun(nproc: int, extra: list[str]) -> None:
    """Run this same command under ``torchrun --nproc-per-node nproc`` (without --nproc) and exit with its code."""
    import subprocess

    argv = sys.argv[1:]
    cleaned: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        cleaned.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "perennial", *cleaned, *extra]
    raise typer.Exit(subprocess.run(cmd).returncode)


def _tracker(mlflow: str | None, tensorboard: Path | None, experiment: str) -> Any:
    """Exports finished runs (None without --mlflow/--tensorboard); checked before training starts."""
    if mlflow is None and tensorboard is None:
        return None
    from perennial.tracking import trackers

    return trackers(mlflow, tensorboard, experiment)


@contextlib.contextmanager
def errors_to_exit(run_hint: str | None = None, resume_hint: str | None = None, run: Any = None) -> Iterator[None]:
    """Turn exceptions into a message and an exit code (2 bad input, 130 interrupted, 1 bug).

    ``run`` is ``(store_dir, run_id)`` of the run the command works on: the messages then
    say what the store holds for it, and the ``continue with: perennial resume`` hint is
    given only when that run exists and can be resumed (never for dry runs, data errors
    or a run that was never created).
    """
    try:
        yield
    except RunInterrupted as e:
        msg = f"interrupted: {e}; a checkpoint was saved"
        saved, hint = _saved(run) if run is not None else (None, resume_hint)
        if hint:
            msg += f"; continue with: {hint}"
        err.print(msg, style="yellow", markup=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except PerennialError as e:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        msg = "interrupted"
        saved, hint = _saved(run) if run is not None else (run_hint and f"in the store ({run_hint})", resume_hint)
        if saved:
            msg += f"; saved: {saved}"
        if hint:
            msg += f"; continue with: {hint}"
        err.print(msg, style="yellow", markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except OSError as e:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    except Exception as e:  # a bug, not bad input: say so briefly; PERENNIAL_DEBUG=1 shows the traceback
        if os.environ.get("PERENNIAL_DEBUG"):
            raise
        msg = f"internal error: {type(e).__name__}: {e}"
        saved, hint = _saved(run) if run is not None else (run_hint and f"in the store ({run_hint})", resume_hint)
        msg += f"; saved: {saved}" if saved else ("; nothing was saved" if run is not None else "")
        if hint:
            msg += f"; after a fix, continue with: {hint}"
        err.print(msg, style="bold red", markup=False, soft_wrap=True)
        err.print(
            "this is a bug in perennial; rerun with PERENNIAL_DEBUG=1 for the traceback and report it", style="dim"
        )
        raise typer.Exit(1) from None


def _saved(run: tuple[Path, str]) -> tuple[str | None, str | None]:
    """What the store holds of ``run`` (None: nothing) and the resume command (None: not resumable).

    Reads an existing store only (never creates one) and never raises: it runs while an
    error is being reported.
    """
    from perennial.store.db import DB_NAME

    store, run_id = run
    if not (Path(store) / DB_NAME).is_file():
        return None, None
    try:
        from perennial.store import RunStore

        st = RunStore(store)
        if not st.exists(run_id):
            return None, None
        rec = st.get(run_id)
        n_ck = len(st.checkpoints(run_id).list())
    except Exception:  # a damaged store: say where to look, promise nothing
        return f"see: perennial doctor --store {store}", None
    rows = len(rec.accuracy_matrix)
    what = f"run {run_id} ({rec.status}) in {store}: {rows} of {rec.n_experiences} experiences measured"
    what += f", {n_ck} checkpoint{'s' if n_ck != 1 else ''}" if n_ck else ", no checkpoint yet"
    hint = f"perennial resume {run_id} --store {store}" if rec.status != "finished" else None
    return what, hint


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
    """A fraction as a percentage with one decimal (``_num`` of ``100 * x``)."""
    return _num(None if x is None else 100 * x, None if sem is None else 100 * sem, digits=1)


def _matrix_table(rec: Any) -> Table:
    return _per_experience_table(
        rec, rec.random_init_acc, rec.accuracy_matrix, _pct, f"accuracy (%) after each experience — {rec.run_id}"
    )


def _per_experience_table(
    rec: Any, initial: list[Any], matrix: list[list[Any]], fmt: Callable[[Any], str], title: str
) -> Table:
    """Row i: a value per experience j after training on experiences 0..i (j > i dimmed: not
    trained yet); first row: the initial model."""
    n = len(initial) or (len(matrix[0]) if matrix else 0)
    names = rec.experience_names or rec.config.get("benchmark", {}).get("domains") or []
    names = list(names) + [f"exp{j}" for j in range(len(names), n)]
    t = Table(title=title, title_justify="left")
    t.add_column("trained on", style="bold")
    for name in names:
        t.add_column(name, justify="right")
    if initial:
        t.add_row("(initial)", *[fmt(v) for v in initial], style="dim")
    for i, row in enumerate(matrix):
        t.add_row(
            names[i] if i < len(names) else str(i),
            *[fmt(v) if j <= i else f"[dim]{fmt(v)}[/]" for j, v in enumerate(row)],
        )
    return t


#: continual-evaluation metrics shown by run/show (those in %; gap_recover_steps is in steps)
CONTINUAL_SHOWN = ("min_acc", "wc_acc", "wf", "wp", "lca", "stability_gap")
#: online runs (train.mode=online): predict-before-train accuracy, anytime accuracy (in %)
ONLINE_SHOWN = ("online_acc", "anytime_acc")


def _is_lm(rec: Any) -> bool:
    if "perplexity" in (rec.metrics or {}):
        return True
    from perennial.streams import BENCHMARKS

    return rec.benchmark in BENCHMARKS and BENCHMARKS.get(rec.benchmark).kind == "lm"


def _num(x: float | None, sem: float | None = None, digits: int = 3) -> str:
    if x is None:
        return "–"
    s = f"{x:.{digits}f}"
    return s if sem is None else f"{s}±{sem:.{digits}f}"


def _loss_table(rec: Any) -> Table:
    """The validation-loss matrix L[i, j] of a language-model run (nats per token)."""
    return _per_experience_table(
        rec,
        rec.random_init_loss,
        rec.loss_matrix,
        _num,
        f"validation loss (nats/token) after each phase — {rec.run_id}",
    )


def _lm_metrics_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="metrics", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in LM_TABLE_METRICS:
        if k in metrics:
            t.add_row(k, _pct(metrics[k]) if k == "acc" else _num(metrics[k]))
    return t


#: language-model runs: losses in nats; forgetting is the rise of validation loss (loss-based)
LM_TABLE_METRICS = ("loss", "perplexity", "forgetting", "forgetting_first", "adaptation", "acc")
LM_METRIC_HELP = (
    "loss: mean validation loss (nats/token) over the domains seen; perplexity: exp(loss); forgetting: rise of an "
    "earlier domain's loss above its best (mean; _first: domain 0); adaptation: loss drop on each new domain in its "
    "phase; acc: next-token accuracy (%)."
)


def _metrics_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="metrics", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("acc", "avg_inc_acc", "forgetting", "bwt", "fwt", "learning_acc", *CONTINUAL_SHOWN, *ONLINE_SHOWN):
        if k in metrics:
            t.add_row(k, _pct(metrics[k]) if metrics[k] is not None else "–")
    if "online_logloss" in metrics:
        t.add_row("online_logloss (nats)", _num(metrics["online_logloss"]))
    if "gap_recover_steps" in metrics:
        v = metrics["gap_recover_steps"]
        t.add_row("gap_recover_steps", f"{v:.0f}" if v is not None and v == v else "–")
    return t


#: columns of the compare table (the JSON has every metric, avg_inc_acc included)
TABLE_METRICS = ("acc", "forgetting", "bwt", "fwt", "learning_acc")

METRIC_HELP = (
    "acc: final average accuracy; forgetting: max-minus-last (Chaudhry); bwt/fwt: backward/forward "
    "transfer; learning_acc: mean of R[i,i]; online_acc: accuracy of each incoming batch predicted before "
    "training on it; anytime_acc: mean accuracy on the seen experiences during training. All in %."
)
CONTINUAL_HELP = (
    "min_acc: mean worst accuracy on old experiences; wc_acc: worst-case accuracy; wf/wp: windowed "
    "forgetting/plasticity; lca: learning curve area; stability_gap: mean drop right after a switch "
    "(docs/continual-evaluation.md)."
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
            "--strategy",
            "-s",
            help="Strategy name, or several joined by '+' (e.g. replay+ewc); your own: package.module:ClassName "
            "(docs/plugins.md). Default: naive.",
        ),
    ] = None,
    scenario: ScenarioOpt = None,
    model: ModelOpt = None,
    text_dir: TextDirOpt = None,
    protocol: ProtocolOpt = None,
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
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            "--checkpoint-every",
            min=1,
            help="Also checkpoint every N steps (always at experience boundaries and on Ctrl-C/SIGTERM).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Validate the config, build stream, model and strategy, print the config; train nothing."
        ),
    ] = False,
    eval_every: EvalEveryOpt = None,
    eval_budget: EvalBudgetOpt = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
    mlflow: MlflowOpt = None,
    mlflow_experiment: MlflowExpOpt = "perennial",
    tensorboard: TensorboardOpt = None,
    nproc: NprocOpt = 1,
) -> None:
    """Train one strategy on one benchmark, print the accuracy matrix and metrics, record the run.

    Example: perennial run -b split-mnist -s replay --set strategy.buffer_size=200 --json out.json

    Online (one pass, each batch predicted then trained on; docs/online.md): perennial run -b split-mnist
    -s er-ace --set train.mode=online --set train.batch_size=10 --set train.boundaries=hidden

    A killed or interrupted run continues exactly with: perennial resume RUN_ID
    """
    from perennial import api
    from perennial.config import build_config

    with errors_to_exit():
        cfg = build_config(
            config,
            set_ or (),
            benchmark=benchmark,
            strategy=strategy,
            scenario=scenario,
            seed=seed,
            checkpoint_every=checkpoint_every,
            eval_every=eval_every,
            eval_budget=eval_budget,
            model=model,
            text_dir=text_dir,
            protocol=protocol,
            threads=threads,
        )
        if dry_run:
            stream, strat, net = api.build(cfg)
            out.print_json(json.dumps(cfg.to_dict()))
            n_params = sum(p.numel() for p in net.parameters())
            out.print(
                f"ok: {stream.name} ({stream.scenario}-incremental, {len(stream)} experiences, input "
                f"{stream.input_shape}, {stream.n_classes} outputs); {strat.describe()}; {n_params:,} parameters",
                markup=False,
                soft_wrap=True,
            )
            out.print(_training_line(cfg.to_dict()), markup=False, soft_wrap=True)
            return
        if nproc > 1 and not _in_torchrun():
            _torchrun(nproc, [] if run_id else ["--run-id", api.new_run_id(cfg)])
        run_id = run_id or api.new_run_id(cfg)
        rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 records and exports
        tracker = _tracker(mlflow, tensorboard, mlflow_experiment) if rank0 else None
    with errors_to_exit(run=(store, run_id)):
        if _in_torchrun():
            from perennial.scale import ddp

            main = os.environ.get("RANK") == "0"
            with _progress(quiet or not main) as progress:
                rec = ddp.run(cfg, store, run_id=run_id, overwrite=overwrite, progress=progress)
            if rec is None:
                return
            if tracker is not None:
                tracker(rec)
            _report_run(rec, store, quiet, json_out)
            return
        st = _store(store)
        with _progress(quiet) as progress:
            rec = api.run(cfg, store=st, run_id=run_id, progress=progress, overwrite=overwrite)
        if tracker is not None:
            tracker(rec)
        _report_run(rec, store, quiet, json_out)


def _report_run(rec: Any, store: Path, quiet: bool, json_out: Path | None) -> None:
    if not quiet and _is_lm(rec):
        out.print(_loss_table(rec))
        out.print(_lm_metrics_table(rec.metrics or {}))
        out.print(LM_METRIC_HELP, style="dim", markup=False)
        out.print(f"run [bold]{rec.run_id}[/] recorded in {store} ({rec.seconds:.1f} s)")
        out.print(f"sample from it: perennial generate {rec.run_id} --store {store} --prompt 'def '", markup=False)
    elif not quiet:
        out.print(_matrix_table(rec))
        out.print(_metrics_table(rec.metrics or {}))
        out.print(METRIC_HELP, style="dim", markup=False)
        if rec.eval_log:
            out.print(CONTINUAL_HELP, style="dim", markup=False)
        out.print(f"run [bold]{rec.run_id}[/] recorded in {store} ({rec.seconds:.1f} s)")
    for note in rec.notes:
        err.print(note, style="yellow", markup=False, soft_wrap=True)
    if json_out is not None:
        _write_json(json_out, rec.summary())


def _training_line(config: dict[str, Any]) -> str:
    """The training settings a run uses and where they come from (the benchmark's defaults)."""
    from perennial.streams import BENCHMARKS

    model = dict(config.get("model") or {})
    name = model.pop("name", "?")
    model.pop("init", None)
    mp = ", ".join(f"{k}={v}" for k, v in model.items() if v is not None)
    t = config.get("train") or {}
    length = f"steps={t['steps']}" if t.get("steps") is not None else f"epochs={t.get('epochs')}"
    keys = ("batch_size", "lr", "optimizer", "schedule")
    train = ", ".join([length, *(f"{k}={t[k]}" for k in keys if t.get(k) is not None)])
    bench = (config.get("benchmark") or {}).get("name", "")
    src = ""
    if bench in BENCHMARKS:
        d = BENCHMARKS.get(bench).defaults
        src = f" (defaults of {bench}: {json.dumps(d, separators=(',', ':'))}; change with --set)" if d else ""
    return f"training: model {name}({mp}); {train}{src}"


@app.command()
def resume(
    run_id: Annotated[
        str, typer.Argument(help="Run id of an interrupted, failed or killed run (see: perennial runs).")
    ],
    store: StoreOpt = Path(DEFAULT_STORE),
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
    mlflow: MlflowOpt = None,
    mlflow_experiment: MlflowExpOpt = "perennial",
    tensorboard: TensorboardOpt = None,
    nproc: NprocOpt = 1,
) -> None:
    """Continue a run from its newest valid checkpoint; it ends with exactly the results of an uninterrupted run.

    Corrupted or truncated checkpoints are detected (checksums) and skipped with a warning.
    """
    from perennial import api

    with errors_to_exit(run=(store, run_id)):
        if nproc > 1 and not _in_torchrun():
            _torchrun(nproc, [])
        rank0 = os.environ.get("RANK", "0") == "0"
        tracker = _tracker(mlflow, tensorboard, mlflow_experiment) if rank0 else None
        if _in_torchrun():
            from perennial.scale import ddp

            main = os.environ.get("RANK") == "0"
            with _progress(quiet or not main) as progress:
                rec = ddp.resume(store, run_id, progress=progress)
            if rec is None:
                return
        else:
            st = _store(store)
            with _progress(quiet) as progress:
                rec = api.resume(st, run_id, progress=progress, threads=threads)
        if tracker is not None:
            tracker(rec)
        _report_run(rec, store, quiet, json_out)


@app.command()
def compare(
    strategies: Annotated[
        str, typer.Option("--strategies", help="Comma-separated strategies; each may be a composition like replay+ewc.")
    ] = "naive,ewc,lwf,replay,joint",
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", "-b", help="Benchmark name. Default: split-mnist.")
    ] = None,
    scenario: ScenarioOpt = None,
    model: ModelOpt = None,
    text_dir: TextDirOpt = None,
    protocol: ProtocolOpt = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            "--sweep",
            help="Also vary a config value: KEY=V1,V2,... (e.g. strategy.ratio=0,0.05,0.25); repeatable "
            "(every combination is run).",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Number of seeds per strategy.")] = 3,
    seed: Annotated[int, typer.Option("--seed", min=0, help="First seed (seeds are SEED..SEED+N-1).")] = 0,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = Path(DEFAULT_STORE),
    eval_every: EvalEveryOpt = None,
    eval_budget: EvalBudgetOpt = None,
    threads: ThreadsOpt = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Also write an HTML report of the grid (plots, tables) into this directory."),
    ] = None,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Train every run again, replacing this grid's runs in the store (default: reuse them)."
        ),
    ] = False,
    workers: WorkersOpt = 1,
    ray_address: RayAddressOpt = None,
    cpus_per_run: CpusOpt = 1.0,
    gpus_per_run: GpusOpt = 0.0,
    retries: RetriesOpt = 2,
    checkpoint_dir: CheckpointDirOpt = None,
    mlflow: MlflowOpt = None,
    mlflow_experiment: MlflowExpOpt = "perennial",
    tensorboard: TensorboardOpt = None,
) -> None:
    """Run several strategies (and --sweep values) over several seeds; print mean ± standard error per metric.

    Running the same compare again with the same store reuses its finished runs, resumes
    interrupted ones from their checkpoints and trains only what is missing (--fresh: all again).

    Example: perennial compare -b split-mnist --strategies naive,ewc,lwf,replay,joint --seeds 3 --report out

    Example: perennial compare -b text-domains --strategies replay --sweep strategy.ratio=0,0.05,0.25 --seeds 3

    Example: perennial compare --strategies naive,replay --seeds 4 --workers 2   (runs as Ray tasks)
    Online runs (--set train.mode=online) add online_acc and anytime_acc columns (docs/online.md).
    """
    from perennial import api
    from perennial.config import build_config

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    with errors_to_exit(f"--store {store}"):
        if not names:
            raise ConfigError([("--strategies", "give at least one strategy, e.g. --strategies naive,replay")])
        variants = _variants(names, sweep or [])
        # Validate every variant's config before running anything.
        problems: list[tuple[str, str]] = []
        cfgs: dict[str, Any] = {}
        for label, name, extra in variants:
            try:
                cfgs[label] = build_config(
                    config,
                    [*(set_ or ()), *extra],
                    benchmark=benchmark,
                    strategy=name,
                    scenario=scenario,
                    seed=seed,
                    eval_every=eval_every,
                    eval_budget=eval_budget,
                    model=model,
                    text_dir=text_dir,
                    protocol=protocol,
                    threads=threads,
                )
            except ConfigError as e:
                problems += [(f"[{label}] {f}", m) for f, m in e.problems]
        if problems:
            raise ConfigError(problems)
        names = [label for label, _, _ in variants]
        tracker = _tracker(mlflow, tensorboard, mlflow_experiment)
        pool = _pool(workers, ray_address, cpus_per_run, gpus_per_run, retries, checkpoint_dir)
        st = _store(store)
        seed_list = list(range(seed, seed + seeds))
        t0 = time.perf_counter()
        total = len(names) * len(seed_list)
        done = [0]

        def on_run(label: str, rec: Any) -> None:
            done[0] += 1
            if tracker is not None:
                tracker(rec)
            if not quiet:
                m = rec.metrics or {}
                score = (
                    f"loss {_num(m.get('loss'))}, forgetting {_num(m.get('forgetting'))}"
                    if _is_lm(rec)
                    else f"acc {_pct(m.get('acc')).strip()}%"
                )
                err.print(
                    f"[{done[0]}/{total}] {label} seed {rec.seed}: {score} ({rec.seconds:.1f} s)",
                    soft_wrap=True,
                    markup=False,
                )

        finished: list[str] = []
        actions: dict[str, int] = {}

        def on_start(rid: str, cfg: Any, action: str) -> None:
            actions[action] = actions.get(action, 0) + 1
            if not quiet and action == "resume":
                err.print(f"resuming interrupted run {rid} from its checkpoint", markup=False, soft_wrap=True)

        def on_run_done(label: str, rec: Any) -> None:
            finished.append(rec.run_id)
            on_run(label, rec)
            for note in rec.notes:
                err.print(note, style="yellow", markup=False, soft_wrap=True)

    again = _command_line()
    with errors_to_exit(f"--store {store}", again), _grid_interrupted(finished, total, store, again):
        with _progress(quiet) as progress, pool or contextlib.nullcontext():
            res = api.compare(
                lambda name, s: cfgs[name].model_copy(update={"seed": s}),
                names,
                seed_list,
                store=st,
                progress=progress,
                on_result=on_run_done,
                pool=pool,
                fresh=fresh,
                on_start=on_start,
            )
        if not quiet and (res.reused or res.resumed):
            out.print(
                f"reused {res.reused} finished run(s) and resumed {res.resumed} interrupted run(s) of this grid "
                f"from {store}; trained {total - res.reused - res.resumed} (--fresh trains all again)",
                markup=False,
                soft_wrap=True,
            )
        failed = pool.failed if pool is not None else []
        if failed and not res.runs:
            _report_failed(failed, store)
        if not quiet:
            first = res.runs[0]
            lm = _is_lm(first)
            cols = LM_TABLE_METRICS if lm else TABLE_METRICS
            cols += tuple(m for m in ("min_acc",) if any(r.get(f"{m}_mean") is not None for r in res.rows))
            cols += tuple(m for m in ONLINE_SHOWN if any(r.get(f"{m}_mean") is not None for r in res.rows))
            unit = "losses in nats, acc in %" if lm else "%"
            t = Table(
                title=f"{first.benchmark} ({first.scenario}-incremental), {len(seed_list)} seed(s): "
                f"mean ± s.e.m. ({unit})",
                title_justify="left",
            )
            t.add_column("strategy", style="bold", no_wrap=True)
            for m in cols:
                t.add_column(m.replace("learning_acc", "learn_acc"), justify="right", no_wrap=True)
            t.add_column("s/run", justify="right", no_wrap=True)
            for row in res.rows:
                fmt = [
                    _pct(row[f"{m}_mean"], row[f"{m}_sem"])
                    if m == "acc" or not lm
                    else _num(row[f"{m}_mean"], row[f"{m}_sem"])
                    for m in cols
                ]
                t.add_row(row["strategy"], *fmt, f"{row['seconds_mean']:.1f}")
            out.print(t)
            out.print(LM_METRIC_HELP if lm else METRIC_HELP, style="dim", markup=False)
            out.print(f"{len(res.runs)} runs recorded in {store} in {time.perf_counter() - t0:.0f} s")
        if json_out is not None:
            from perennial.config import parse_value

            params = {label: dict(_split_set(x, parse_value) for x in extra) for label, _, extra in variants}
            data = res.to_dict()
            for row in data["results"]:  # a sweep row's values, structured next to its label
                row["params"] = params.get(row["strategy"], {})
            _write_json(json_out, data)
        if report is not None:
            from perennial.report import write_report

            path = write_report(st, [r.run_id for r in res.runs], report)
            if not quiet:
                out.print(f"report: {path}")
        if failed:
            _report_failed(failed, store)


@app.command("tune")
def tune_cmd(
    space: Annotated[
        list[str],
        typer.Option(
            "--space",
            help="A dimension to search: KEY=loguniform:LO:HI, uniform:LO:HI, int:LO:HI or choice:A,B,... "
            "(repeatable), e.g. --space train.lr=loguniform:1e-4:1e-2.",
        ),
    ],
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="Strategy (or composition) to tune.")] = "replay",
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", "-b", help="Benchmark name. Default: split-mnist.")
    ] = None,
    scenario: ScenarioOpt = None,
    model: ModelOpt = None,
    trials: Annotated[int, typer.Option("--trials", help="Number of trials.")] = 16,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="first-k: tune on the first K experiences; validation: tune on held-out training data. The chosen "
            "setting is then run on the full stream with fresh seeds.",
        ),
    ] = "first-k",
    k: Annotated[int, typer.Option("--k", help="first-k: experiences the trials see.")] = 2,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="validation: share of each experience's training data held out.")
    ] = 0.1,
    metric: Annotated[str, typer.Option("--metric", help="Metric the trials are scored by (e.g. acc, loss).")] = "acc",
    mode: Annotated[str, typer.Option("--mode", help="max or min.")] = "max",
    searcher: Annotated[str, typer.Option("--searcher", help="optuna (TPE, seeded) or random.")] = "optuna",
    final_seeds: Annotated[int, typer.Option("--final-seeds", min=1, help="Fresh seeds for the final runs.")] = 3,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Tuning seed (final runs use SEED+1...).")] = 0,
    workers: WorkersOpt = 2,
    ray_address: RayAddressOpt = None,
    cpus_per_run: CpusOpt = 1.0,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = Path(DEFAULT_STORE),
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for tune.json, best-config.json and Ray Tune's files.")
    ] = Path("perennial-tune"),
    quiet: QuietOpt = False,
) -> None:
    """Tune hyperparameters with Ray Tune without peeking at the reported stream, then run the best on it.

    Example: perennial tune -s replay --space train.lr=loguniform:1e-4:1e-2 --space strategy.buffer_size=choice:100,200,500 --trials 16 --workers 2

    The search never scores on the test data of the stream it reports (docs/scale-out.md, protocol).
    """
    from perennial.config import build_config

    with errors_to_exit(f"--store {store}"):
        from perennial.scale import tune as tuning

        dims = tuning.parse_space(space)
        base = build_config(
            config, set_ or (), benchmark=benchmark, strategy=strategy, scenario=scenario, seed=seed, model=model
        )
        out_dir.mkdir(parents=True, exist_ok=True)

        def on_final(label: str, rec: Any) -> None:
            if not quiet:
                err.print(
                    f"final {label} seed {rec.seed}: acc {_pct((rec.metrics or {}).get('acc')).strip()}%", markup=False
                )

        res = tuning.tune(
            base,
            dims,
            trials=trials,
            workers=workers,
            protocol=protocol,
            k=k,
            val_fraction=val_fraction,
            metric=metric,
            mode=mode,
            searcher=searcher,
            final_seeds=final_seeds,
            cpus_per_run=cpus_per_run,
            address=ray_address,
            storage=out_dir / "ray",
            store=_store(store),
            on_final=on_final,
        )
        _write_json(out_dir / "tune.json", res.to_dict())
        _write_json(out_dir / "best-config.json", res.best_config)
        if not quiet:
            t = Table(
                title=f"{len(res.trials)} trials ({res.metric}, {res.mode}) — {res.protocol}", title_justify="left"
            )
            for d in dims:
                t.add_column(d.key, justify="right")
            t.add_column(res.metric, justify="right")
            for tr in sorted(
                res.trials,
                key=lambda x: -(x.get(res.metric) or -1e9) if res.mode == "max" else (x.get(res.metric) or 1e9),
            ):
                t.add_row(
                    *[str(tr["params"].get(d.key)) for d in dims],
                    _num(tr.get(res.metric), digits=4) if res.metric in tr else "failed",
                )
            out.print(t)
            row = res.final.rows[0]
            out.print(f"chosen: {', '.join(f'{k}={v}' for k, v in res.best_params.items())}", markup=False)
            out.print(
                f"final runs (full stream, seeds {res.final_seeds}): acc {_pct(row['acc_mean'], row['acc_sem'])}%, "
                f"forgetting {_pct(row['forgetting_mean'], row['forgetting_sem'])}%",
                markup=False,
            )
            out.print(res.protocol_text, style="dim", markup=False, soft_wrap=True)
            out.print(
                f"written: {out_dir / 'tune.json'}, {out_dir / 'best-config.json'} (use with --config)", markup=False
            )


def _pool(
    workers: int,
    address: str | None,
    cpus_per_run: float,
    gpus_per_run: float,
    retries: int,
    checkpoint_dir: str | None,
) -> Any:
    """None (runs in this process) for --workers 1 without --ray-address, else a Ray pool."""
    from perennial.errors import DistributedError

    if workers < 1:
        raise DistributedError(f"--workers must be at least 1, got {workers} (1: in this process; N > 1: on Ray)")
    if workers == 1 and address is None:
        return None
    from perennial.scale.ray_runs import RayPool

    def on_failure(label: str, cfg: Any, error: str, attempt: int, retry: bool) -> None:
        then = f"retrying from its last checkpoint (attempt {attempt + 1})" if retry else "giving up"
        err.print(f"run {label} seed {cfg.seed} failed: {error}; {then}", style="yellow", markup=False, soft_wrap=True)

    return RayPool(
        workers,
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        retries=retries,
        checkpoint_root=checkpoint_dir,
        on_failure=on_failure,
    )


def _report_failed(failed: list[tuple[str, str, str]], store: Path) -> None:
    for label, run_id, error in failed:
        err.print(
            f"run {run_id} ({label}) failed: {error}; continue it with: perennial resume {run_id} --store {store}",
            style="bold red",
            markup=False,
            soft_wrap=True,
        )
    raise typer.Exit(1)


def _command_line() -> str:
    """This invocation as a shell command (to repeat it), when it came from a shell."""
    if sys.argv and Path(sys.argv[0]).name in ("perennial", "perennial.exe", "__main__.py"):
        return shlex.join(["perennial", *sys.argv[1:]])
    return "the same perennial compare command"


@contextlib.contextmanager
def _grid_interrupted(finished: list[str], total: int, store: Path, again: str) -> Iterator[None]:
    """On an interrupted compare: say which runs finished (they are reused by running it again)."""
    try:
        yield
    except (RunInterrupted, KeyboardInterrupt):
        err.print(
            f"compare interrupted after {len(finished)} of {total} runs; finished runs (kept in {store}, reused next "
            f"time): {', '.join(finished) or 'none'}",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
        err.print(f"continue the grid with: {again}", style="yellow", markup=False, soft_wrap=True)
        raise


def _split_set(item: str, parse: Callable[[str], Any]) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    return key.strip(), parse(value)


def _variants(names: list[str], sweeps: list[str]) -> list[tuple[str, str, list[str]]]:
    """(label, strategy, extra --set items) for every strategy x every combination of sweep values."""
    import itertools

    axes: list[list[str]] = []
    for item in sweeps:
        key, eq, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not key.strip() or not vals:
            raise ConfigError([("--sweep", f"{item!r} is not KEY=V1,V2,... (e.g. strategy.ratio=0,0.05,0.25)")])
        axes.append([f"{key.strip()}={v}" for v in vals])
    out = []
    for name in names:
        for combo in itertools.product(*axes):
            out.append((" ".join([name, *combo]), name, list(combo)))
    return out


@app.command()
def adapt(
    source: Annotated[
        str | None, typer.Option("--source", help="Run id of the source model (perennial run -b mnist-c -m cnn-bn).")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Or a saved model file (<store>/models/RUN_ID.pt).")
    ] = None,
    benchmark: Annotated[
        str, typer.Option("--benchmark", "-b", help="mnist-c, digits-c, or npz-dir (with --path).")
    ] = "mnist-c",
    path: Annotated[Path | None, typer.Option("--path", help="npz-dir: a folder of .npz domains (x, y).")] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method", help="Comma-separated: source, bn, tent, eata, sar, cotta, rmt, lame, rdumb (several: a grid)."
        ),
    ] = "tent",
    shape: Annotated[
        str, typer.Option("--shape", help="continual (severity 5, one after another), gradual (1-5-1), repeated.")
    ] = "continual",
    corruptions: Annotated[
        str | None, typer.Option("--corruptions", help="Comma-separated corruption names (default: all 12).")
    ] = None,
    severity: Annotated[int, typer.Option("--severity", help="Severity 1-5 (continual and repeated).")] = 5,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of the repeated sequence.")] = 10,
    order: Annotated[
        str, typer.Option("--order", help="iid (shuffled) or class (sorted by label: non-i.i.d.).")
    ] = "iid",
    samples: Annotated[
        int | None, typer.Option("--samples-per-domain", help="Cap each domain (default: the whole test set).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Test batch size.")] = 64,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Method hyperparameter KEY=VALUE, e.g. --param lr=1e-4.")
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per method (sample order).")] = 1,
    seed: Annotated[int, typer.Option("--seed", min=0, help="First seed.")] = 0,
    resume_id: Annotated[
        str | None, typer.Option("--resume", help="Continue an interrupted adaptation run (other options ignored).")
    ] = None,
    store: StoreOpt = Path(DEFAULT_STORE),
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write an HTML report into this directory.")
    ] = None,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Test-time adaptation: adapt a source model on an unlabeled, shifting test stream; each batch is predicted, then adapted on.

    Example: perennial run -b mnist-c -m cnn-bn   (then)   perennial adapt --source RUN_ID --method tent --json out.json

    Example: perennial adapt --source RUN_ID --method source,bn,tent,cotta,rmt --seeds 3 --report tta
    """
    from pydantic import ValidationError

    from perennial import adapt_api

    with errors_to_exit(
        f"--store {store}", f"perennial adapt --resume {resume_id} --store {store}" if resume_id else None
    ):
        st = _store(store)
        if resume_id is not None:
            with _progress(quiet) as progress:
                runs = [adapt_api.resume_adapt(st, resume_id, progress=progress)]
            rows = adapt_api.grid_rows(runs)
        else:
            methods = [m.strip() for m in method.split(",") if m.strip()]
            params: dict[str, Any] = {}
            for item in param or ():
                key, eq, value = item.partition("=")
                if not eq or not key:
                    raise ConfigError([("--param", f"expected KEY=VALUE, got {item!r}")])
                try:
                    params[key.strip()] = json.loads(value)
                except json.JSONDecodeError:
                    params[key.strip()] = value
            try:
                base = adapt_api.AdaptConfig(
                    source=source,
                    weights=None if weights is None else str(weights),
                    benchmark=benchmark,
                    path=None if path is None else str(path),
                    shape=shape,  # type: ignore[arg-type]
                    corruptions=[c.strip() for c in corruptions.split(",") if c.strip()] if corruptions else None,
                    severity=severity,
                    rounds=rounds,
                    order=order,  # type: ignore[arg-type]
                    samples_per_domain=samples,
                    batch_size=batch_size,
                    seed=seed,
                )
            except ValidationError as e:
                raise ConfigError([(".".join(map(str, x["loc"])), x["msg"]) for x in e.errors()]) from None
            cfgs = {m: base.model_copy(update={"method": m, "method_params": params}) for m in methods}
            for c in cfgs.values():  # every input problem before anything is stored
                adapt_api.prepare(c, st)
            with _progress(quiet) as progress:
                rows, runs = adapt_api.adapt_grid(
                    lambda m, s: cfgs[m].model_copy(update={"seed": s}),
                    methods,
                    list(range(seed, seed + seeds)),
                    store=st,
                    progress=progress,
                )
        if not quiet:
            t = Table(
                title=f"{runs[0].benchmark} ({runs[0].scenario}): online error, mean ± s.e.m. (%)", title_justify="left"
            )
            for col in ("method", "seeds", "error", "source error", "first round", "last round", "s/run"):
                t.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
            for row in rows:
                t.add_row(
                    row["strategy"],
                    str(row["n"]),
                    *(_pct(row[f"{m}_mean"], row[f"{m}_sem"]) for m in adapt_api.ADAPT_METRICS),
                    f"{row['seconds_mean']:.1f}",
                )
            out.print(t)
            out.print(f"{len(runs)} run(s) recorded in {store}: {', '.join(r.run_id for r in runs)}", soft_wrap=True)
        if json_out is not None:
            _write_json(
                json_out,
                runs[0].summary() if len(runs) == 1 else {"results": rows, "run_ids": [r.run_id for r in runs]},
            )
        if report is not None:
            from perennial.report import write_report

            p = write_report(st, [r.run_id for r in runs], report)
            if not quiet:
                out.print(f"report: {p}")


@app.command()
def generate(
    run_id: Annotated[str, typer.Argument(help="Run id of a finished language-model run (see: perennial runs).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue.")] = "def ",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Tokens to sample.")] = 200,
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", min=0.0, help="Sampling temperature (0: greedy).")
    ] = 0.8,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Sample among the k most likely tokens only.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Sampling seed (same seed, same text).")] = 0,
    store: StoreOpt = Path(DEFAULT_STORE),
) -> None:
    """Print PROMPT and a sampled continuation from a language-model run's final model.

    Example: perennial generate RUN_ID --prompt "def " --max-tokens 200 --temperature 0.8
    """
    from perennial import api

    with errors_to_exit():
        text = api.generate(
            _store(store), run_id, prompt, max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, seed=seed
        )
        out.print(prompt + text, markup=False, highlight=False, soft_wrap=True)


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
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table, csv (one row per run, metrics as columns; pandas.read_csv) or json (to stdout).",
        ),
    ] = "table",
) -> None:
    """List stored runs, newest first."""
    with errors_to_exit():
        _check_format(fmt, ("table", "csv", "json"))
        recs = _store(store).list(benchmark=benchmark, strategy=strategy, status=status, limit=limit)
        if fmt == "csv":
            _write_csv(_run_rows(recs))
            return
        if fmt == "json":
            json_out = Path("-")
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
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table, or csv: the accuracy matrix in long form (row, trained_on, experience, accuracy, loss).",
        ),
    ] = "table",
) -> None:
    """Show one stored run: config, accuracy matrix, metrics."""
    with errors_to_exit():
        _check_format(fmt, ("table", "csv"))
        rec = _store(store).get(run_id)
        if fmt == "csv":
            _write_csv(_matrix_rows(rec))
            return
        if json_out is not None:
            _write_json(json_out, rec.summary())
            return
        out.print(
            f"[bold]{rec.run_id}[/]  status={rec.status}  {rec.benchmark}/{rec.scenario}  strategy={rec.strategy}  seed={rec.seed}"
        )
        if rec.error:
            out.print(f"[red]{rec.error}[/]")
        if _is_lm(rec):
            out.print(_loss_table(rec))
            if rec.metrics:
                out.print(_lm_metrics_table(rec.metrics))
        elif "adapt" in rec.config:  # test-time adaptation: online error per domain
            m = rec.metrics or {}
            t = Table(title=f"online error (%) per domain — {rec.run_id}", title_justify="left")
            for col in ("domain", rec.strategy, "source"):
                t.add_column(col, justify="left" if col == "domain" else "right", no_wrap=True)
            for d in m.get("domains") or []:
                t.add_row(d, _pct(m["error_per_domain"].get(d)), _pct(m.get("source_error_per_domain", {}).get(d)))
            if m:
                t.add_row("mean", _pct(m.get("error")), _pct(m.get("source_error")), style="bold")
            out.print(t)
        else:
            out.print(_matrix_table(rec))
            metrics = {**(rec.metrics or {}), **rec.continual_metrics()}
            if metrics:
                out.print(_metrics_table(metrics))
        if rec.eval_log:
            out.print(CONTINUAL_HELP, style="dim", markup=False)
        out.print(_training_line(rec.config), markup=False, soft_wrap=True)
        out.print("config: " + json.dumps(rec.config, sort_keys=True))


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise ConfigError([("--format", f"unknown format {fmt!r}; use one of {', '.join(allowed)}")])


def _write_csv(rows: list[dict[str, Any]]) -> None:
    import csv

    cols = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(sys.stdout, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})


def _run_rows(recs: list[Any]) -> list[dict[str, Any]]:
    """One flat row per run: identity, status, seconds, then every scalar metric (fractions)."""
    rows = []
    for r in recs:
        row: dict[str, Any] = {
            "run_id": r.run_id,
            "status": r.status,
            "benchmark": r.benchmark,
            "scenario": r.scenario,
            "strategy": r.strategy,
            "seed": r.seed,
            "n_experiences": r.n_experiences,
            "seconds": r.seconds,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r.created)),
        }
        row.update({k: v for k, v in sorted((r.metrics or {}).items()) if not isinstance(v, (list, dict))})
        rows.append(row)
    return rows


def _matrix_rows(rec: Any) -> list[dict[str, Any]]:
    """The accuracy (and loss) matrix of a run in long form; row -1 is the initial model."""
    names = list(rec.experience_names)
    rows = []
    mats = [(-1, rec.random_init_acc, rec.random_init_loss)] if rec.random_init_acc else []
    mats += [(i, a, rec.loss_matrix[i] if i < len(rec.loss_matrix) else []) for i, a in enumerate(rec.accuracy_matrix)]
    for i, accs, losses in mats:
        for j, a in enumerate(accs):
            rows.append(
                {
                    "run_id": rec.run_id,
                    "row": i,
                    "trained_on": "(initial)" if i < 0 else (names[i] if i < len(names) else i),
                    "experience": names[j] if j < len(names) else j,
                    "accuracy": a,
                    "loss": losses[j] if j < len(losses) else None,
                }
            )
    return rows


@app.command()
def doctor(
    store: StoreOpt = Path(DEFAULT_STORE),
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Move a damaged runs.sqlite aside and re-create the runs its checkpoints hold (resumable).",
        ),
    ] = False,
    json_out: JsonOpt = None,
) -> None:
    """Check a run store: SQLite integrity_check, every run row, every checkpoint's and model's SHA-256.

    Exit code 0: healthy; 2: problems found (each listed with what to do).
    Example: perennial doctor --store perennial-runs   (then, if it says so: --rebuild)
    """
    from perennial.store.doctor import describe, diagnose, dumps_report
    from perennial.store.doctor import rebuild as rebuild_store

    with errors_to_exit():
        if rebuild:
            restored, problems = rebuild_store(store)
            for run_id in restored:
                out.print(
                    f"rebuilt run {run_id} (interrupted); continue with: perennial resume {run_id} --store {store}"
                )
            for p in problems:
                err.print(f"not rebuilt: {p}", style="yellow", markup=False, soft_wrap=True)
            if not restored and not problems:
                out.print("nothing to rebuild: every checkpointed run is in the store")
        d = diagnose(store)
        if json_out is not None:
            _write_json_text(json_out, dumps_report(d))
        else:
            (out if d.healthy else err).print(describe(d), markup=False, soft_wrap=True)
    if not d.healthy:
        raise typer.Exit(2)


def _write_json_text(path: Path, text: str) -> None:
    if str(path) == "-":
        sys.stdout.write(text + "\n")
    else:
        path.write_text(text + "\n")


@app.command("report")
def report_cmd(
    run_ids: Annotated[
        list[str] | None, typer.Argument(help="Run ids (see: perennial runs); several seeds/strategies are compared.")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.html and the PNG plots.")] = Path(
        "perennial-report"
    ),
    from_json: Annotated[
        Path | None,
        typer.Option("--from", help="Take the run ids from a JSON file written by compare --json or run --json."),
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Title of the report.")] = None,
    store: StoreOpt = Path(DEFAULT_STORE),
) -> None:
    """Write a self-contained HTML report (plots embedded, PNGs beside it) of stored runs.

    Example: perennial report RUN_ID [RUN_ID ...] --out report  (then open report/report.html)
    """
    with errors_to_exit():
        ids = list(run_ids or [])
        if from_json is not None:
            ids += _ids_from_json(from_json)
        if not ids:
            raise ConfigError([("RUN_ID", "give at least one run id (see: perennial runs) or --from FILE")])
        from perennial.report import write_report

        path = write_report(_store(store), list(dict.fromkeys(ids)), out_dir, title=title)
        out.print(f"report: {path}")


@app.command("export")
def export_cmd(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Run ids (see: perennial runs).")] = None,
    to: Annotated[str, typer.Option("--to", help="mlflow, tensorboard or csv.")] = "csv",
    dest: Annotated[
        str | None,
        typer.Option(
            "--dest",
            "-o",
            help="mlflow: tracking URI (default sqlite:///mlflow.db); tensorboard/csv: folder (default perennial-export).",
        ),
    ] = None,
    mlflow_experiment: MlflowExpOpt = "perennial",
    from_json: Annotated[
        Path | None, typer.Option("--from", help="Take the run ids from a compare --json / run --json file.")
    ] = None,
    store: StoreOpt = Path(DEFAULT_STORE),
) -> None:
    """Export stored runs to MLflow, TensorBoard event files or CSV files.

    Example: perennial export RUN_ID [RUN_ID ...] --to mlflow --dest sqlite:///mlflow.db

    Example: perennial export --from cmp.json --to tensorboard --dest tb   (then: tensorboard --logdir tb)
    """
    with errors_to_exit():
        ids = list(run_ids or [])
        if from_json is not None:
            ids += _ids_from_json(from_json)
        if not ids:
            raise ConfigError([("RUN_ID", "give at least one run id (see: perennial runs) or --from FILE")])
        if to not in ("mlflow", "tensorboard", "csv"):
            raise ConfigError([("--to", f"{to!r} is not one of mlflow, tensorboard, csv")])
        from perennial import tracking

        st = _store(store)
        recs = [st.get(rid) for rid in dict.fromkeys(ids)]  # unknown ids fail before anything is written
        if to == "mlflow":
            uri = dest or "sqlite:///mlflow.db"
            tracking.export_mlflow(recs, uri, mlflow_experiment)
            out.print(f"{len(recs)} run(s) logged to MLflow at {uri} (experiment {mlflow_experiment!r})", markup=False)
        elif to == "tensorboard":
            paths = tracking.export_tensorboard(recs, dest or "perennial-export")
            out.print(f"{len(paths)} run(s) written; view with: tensorboard --logdir {dest or 'perennial-export'}")
        else:
            path = tracking.export_csv(recs, dest or "perennial-export")
            out.print(f"{len(recs)} run(s) written: {path} (and one folder per run beside it)", markup=False)


def _ids_from_json(path: Path) -> list[str]:
    from perennial.errors import DataError
    from perennial.files import read_bytes

    try:
        data = json.loads(read_bytes(path, 64 << 20, "--from").decode("utf-8"))
    except (OSError, DataError, ValueError, RecursionError) as e:
        raise ConfigError([("--from", f"cannot read run ids from {path}: {e}")]) from None
    if isinstance(data, dict) and isinstance(data.get("run_ids"), list):
        return [str(x) for x in data["run_ids"]]
    if isinstance(data, dict) and isinstance(data.get("run_id"), str):
        return [data["run_id"]]
    raise ConfigError([("--from", f"{path} has no run_ids (compare --json) or run_id (run --json)")])


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        out.print(line, markup=False, soft_wrap=True, highlight=False)


@list_app.command("strategies")
def list_strategies(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Add scenarios, language-model support (+lm), online support (online: runs with "
            "train.mode=online; online+hidden: also with train.boundaries=hidden) and a description.",
        ),
    ] = False,
) -> None:
    """Registered strategies."""
    from perennial.catalog import cached_lines

    def produce() -> list[str]:
        from perennial.strategies import STRATEGIES

        lines = []
        for name, cls in STRATEGIES.items():
            if verbose:
                lm = "+lm" if "lm" in cls.kinds else ""
                scen = f"[{','.join(sorted(cls.scenarios))}]{lm}"
                online = ("online+hidden" if _boundary_free(cls) else "online") if cls.online else "offline"
                lines.append(f"{name:<14} {scen:<23} {online:<14} {cls.summary}")
            else:
                lines.append(name)
        return lines

    _print_lines(cached_lines(f"strategies{'-v' if verbose else ''}", produce))


def _boundary_free(cls: Any) -> bool:
    """Whether the strategy with its default hyperparameters runs with hidden boundaries."""
    try:
        return not cls().needs_boundaries()
    except Exception:  # a strategy without defaults for every field
        return bool(cls.boundary_free)


@list_app.command("benchmarks")
def list_benchmarks(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add scenarios and a description.")] = False,
) -> None:
    """Built-in benchmarks."""
    from perennial.catalog import cached_lines

    def produce() -> list[str]:
        from perennial.streams import BENCHMARKS

        return [
            f"{name:<16} [{','.join(b.scenarios)}]{' (needs local data)' if b.needs_data else ''} {b.description}"
            if verbose
            else name
            for name, b in BENCHMARKS.items()
        ]

    _print_lines(cached_lines(f"benchmarks{'-v' if verbose else ''}", produce))


@list_app.command("protocols")
def list_protocols(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Add the setting, its source and how ours differs.")
    ] = False,
) -> None:
    """Published training protocols usable as presets: perennial run --protocol NAME."""
    from perennial.protocols import PROTOCOLS

    for name, p in PROTOCOLS.items():
        if not verbose:
            out.print(name, markup=False)
            continue
        out.print(f"[bold]{name}[/]: {p.description}", soft_wrap=True)
        out.print(f"  source: {p.source}", markup=False, soft_wrap=True)
        if p.deviations:
            out.print(f"  differs: {p.deviations}", markup=False, soft_wrap=True)


@list_app.command("methods")
def list_methods(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add a description.")] = False) -> None:
    """Test-time adaptation methods (perennial adapt --method)."""
    from perennial.adaptation import ADAPTERS

    for name, cls in ADAPTERS.items():
        out.print(f"{name:<8} {cls.summary}" if verbose else name, markup=False, soft_wrap=True)


@list_app.command("models")
def list_models(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add a description.")] = False) -> None:
    """Model builders."""
    from perennial.catalog import cached_lines

    def produce() -> list[str]:
        from perennial.models import MODELS

        return [f"{name:<8} {m.description}" if verbose else name for name, m in MODELS.items()]

    _print_lines(cached_lines(f"models{'-v' if verbose else ''}", produce))


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:  # pragma: no cover - entry point
    import signal

    # SIGTERM outside a run's own signal window (start-up, stream building, reports) ends the
    # command like Ctrl-C: a message and exit code 130 instead of a silent default kill.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
