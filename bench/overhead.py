"""Overhead of perennial's loop against bare, hand-written PyTorch loops.

Same protocol on both sides, in one process, interleaved: split-mnist class-incremental,
MLP 784-400-400, Adam lr 1e-3, batch 128, the same epochs, the same initial weights, the same
data order (the same seeded permutation per experience), evaluation on every experience's
test set after each experience. Each strategy has its own bare reference loop, written
plainly, the way a paper's reference code would be (one function per method, no hooks, no
store); the rehearsal ones keep a 500-sample reservoir buffer over the whole stream and
replay batches of 128:

- ``naive``: fine-tuning;
- ``replay``: ER, 128 stored samples appended to every batch (Chaudhry et al. 2019);
- ``der``: ``CE(new) + alpha * MSE(f(x'), z')`` on a replayed batch with stored logits;
- ``derpp``: DER plus ``beta * CE(f(x''), y'')`` on a second replayed batch;
- ``er-ace``: the new samples' cross-entropy over the classes present in the batch, plus the
  full cross-entropy on a separate replayed batch.

    python bench/overhead.py --json bench/results/overhead.json [--repeats 5] [--epochs 20] [--threads 1]

Reports process CPU time (``time.process_time``, training + evaluation; less sensitive than
wall time to other jobs on a shared machine, and, with one torch thread, the work done) of
each side: the median over repetitions, ``ratio = median(perennial) / median(bare)`` and the
median of the per-repetition ratios (``paired``). Targets: <= 1.02 for naive, <= 1.03 for the
replay family. ``--profile`` also reports how much of perennial's replay step the buffer
takes (insert + sample), measured by timing those calls inside a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from perennial.memory import Buffer
from perennial.models import build_model
from perennial.seeding import derive_seed
from perennial.strategies import DER, ERACE, DERpp, Naive, Replay, Strategy
from perennial.streams import build_benchmark
from perennial.train import TrainSettings, fit

BATCH, LR, BUFFER = 128, 1e-3, 500
DER_ALPHA, DERPP_ALPHA, DERPP_BETA = 0.3, 0.1, 1.0


# ------------------------------------------------------------------ bare reference loops
class Reservoir:
    """A plain reservoir buffer (Vitter's algorithm R, vectorised over the batch)."""

    def __init__(self, input_shape, n_logits: int, seed: int):
        self.x = torch.zeros(BUFFER, *input_shape)
        self.y = torch.zeros(BUFFER, dtype=torch.long)
        self.z = torch.zeros(BUFFER, n_logits)
        self.filled, self.seen = 0, 0
        self.g = torch.Generator().manual_seed(seed)

    def add(self, x, y, z=None):
        n = len(y)
        free = min(BUFFER - self.filled, n)
        a, b = self.filled, self.filled + free
        self.x[a:b], self.y[a:b] = x[:free], y[:free]
        if z is not None:
            self.z[a:b] = z[:free]
        self.filled += free
        if free < n:
            pos = self.seen + torch.arange(free, n)
            j = (torch.rand(n - free, generator=self.g) * (pos + 1)).long()
            keep = j < BUFFER
            self.x[j[keep]], self.y[j[keep]] = x[free:][keep], y[free:][keep]
            if z is not None:
                self.z[j[keep]] = z[free:][keep]
        self.seen += n

    def sample(self, m):
        r = torch.randint(self.filled, (m,), generator=self.g)
        return self.x[r], self.y[r], self.z[r]


def batches(stream, i: int, epochs: int, seed: int):
    """The experience's batches in the same seeded order as perennial's loop."""
    x, y = stream.experiences[i].train.x, stream.experiences[i].train.y
    order = torch.Generator().manual_seed(derive_seed(seed, "order", i))
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        for s in range(0, len(y), BATCH):
            idx = perm[s : s + BATCH]
            yield x[idx], y[idx]


def evaluate(model, stream) -> list[float]:
    model.eval()
    with torch.inference_mode():
        accs = [float((model(e.test.x).argmax(1) == e.test.y).float().mean()) for e in stream]
    model.train()
    return accs


def bare_naive(model, opt, stream, epochs, seed):
    for i in range(len(stream)):
        for x, y in batches(stream, i, epochs, seed):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        accs = evaluate(model, stream)
    return accs


def bare_replay(model, opt, stream, epochs, seed):
    buf = Reservoir(stream.input_shape, stream.n_classes, seed)
    for i in range(len(stream)):
        for x, y in batches(stream, i, epochs, seed):
            if buf.filled:
                bx, by, _ = buf.sample(BATCH)
                inp, tgt = torch.cat([x, bx]), torch.cat([y, by])
            else:
                inp, tgt = x, y
            loss = F.cross_entropy(model(inp), tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            buf.add(x, y)
        accs = evaluate(model, stream)
    return accs


def bare_der(model, opt, stream, epochs, seed, alpha=DER_ALPHA, beta=0.0):
    """DER (beta = 0) and DER++ (Buzzega et al. 2020, their Algorithm 1)."""
    buf = Reservoir(stream.input_shape, stream.n_classes, seed)
    for i in range(len(stream)):
        for x, y in batches(stream, i, epochs, seed):
            out = model(x)
            loss = F.cross_entropy(out, y)
            if buf.filled:
                bx, _, bz = buf.sample(BATCH)
                loss = loss + alpha * F.mse_loss(model(bx), bz)
                if beta:
                    bx, by, _ = buf.sample(BATCH)
                    loss = loss + beta * F.cross_entropy(model(bx), by)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            buf.add(x, y, out.detach())
        accs = evaluate(model, stream)
    return accs


def bare_derpp(model, opt, stream, epochs, seed):
    return bare_der(model, opt, stream, epochs, seed, alpha=DERPP_ALPHA, beta=DERPP_BETA)


def bare_er_ace(model, opt, stream, epochs, seed):
    """ER-ACE (Caccia et al. 2022): masked CE on the incoming batch + CE on a replayed batch."""
    buf = Reservoir(stream.input_shape, stream.n_classes, seed)
    for i in range(len(stream)):
        for x, y in batches(stream, i, epochs, seed):
            out = model(x)
            absent = torch.ones(out.shape[1], dtype=torch.bool)
            absent[y] = False
            loss = F.cross_entropy(out.masked_fill(absent, -1e9), y)
            if buf.filled:
                bx, by, _ = buf.sample(BATCH)
                loss = loss + F.cross_entropy(model(bx), by)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            buf.add(x, y)
        accs = evaluate(model, stream)
    return accs


BARE: dict[str, Callable] = {
    "naive": bare_naive,
    "replay": bare_replay,
    "der": bare_der,
    "derpp": bare_derpp,
    "er-ace": bare_er_ace,
}


def perennial_strategy(name: str) -> Strategy:
    return {
        "naive": lambda: Naive(),
        "replay": lambda: Replay(buffer_size=BUFFER, replay_batch_size=BATCH),
        "der": lambda: DER(buffer_size=BUFFER, replay_batch_size=BATCH, alpha=DER_ALPHA),
        "derpp": lambda: DERpp(buffer_size=BUFFER, replay_batch_size=BATCH, alpha=DERPP_ALPHA, beta=DERPP_BETA),
        "er-ace": lambda: ERACE(buffer_size=BUFFER, replay_batch_size=BATCH),
    }[name]()


# ------------------------------------------------------------------------- the two sides
def new_model(stream, seed: int):
    torch.manual_seed(seed)
    return build_model("mlp", stream.input_shape, stream.n_classes, hidden=[400, 400])


def bare_run(name: str, stream, epochs: int, seed: int) -> tuple[float, float]:
    model = new_model(stream, seed)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    t0 = time.process_time()
    accs = BARE[name](model, opt, stream, epochs, seed)
    return time.process_time() - t0, sum(accs) / len(accs)


def perennial_run(name: str, stream, epochs: int, seed: int) -> tuple[float, float]:
    model = new_model(stream, seed)
    strategy = perennial_strategy(name)
    t0 = time.process_time()
    r = fit(model, stream, strategy, TrainSettings(epochs=epochs, batch_size=BATCH, lr=LR, device="cpu"), seed=seed)
    return time.process_time() - t0, sum(r.accuracy_matrix[-1]) / len(stream)


def buffer_profile(stream, epochs: int) -> dict[str, float]:
    """CPU time of Buffer.add and Buffer.sample_index + gather inside one perennial replay run."""
    spent = {"insert": 0.0, "sample": 0.0}
    originals = {n: getattr(Buffer, n) for n in ("add", "sample_index", "gather")}

    def timed(fn, key):
        def wrapper(*a, **k):
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - t

        return wrapper

    Buffer.add = timed(originals["add"], "insert")  # type: ignore[method-assign]
    Buffer.sample_index = timed(originals["sample_index"], "sample")  # type: ignore[method-assign]
    Buffer.gather = timed(originals["gather"], "sample")  # type: ignore[method-assign]
    try:
        total, _ = perennial_run("replay", stream, epochs, 0)
    finally:
        for n, f in originals.items():
            setattr(Buffer, n, f)
    out = {"run_seconds": total, **{f"{k}_seconds": v for k, v in spent.items()}, "share": sum(spent.values()) / total}
    # the same for the bare loop's own reservoir, for comparison
    spent.update(insert=0.0, sample=0.0)
    bare = {n: getattr(Reservoir, n) for n in ("add", "sample")}
    Reservoir.add = timed(bare["add"], "insert")  # type: ignore[method-assign]
    Reservoir.sample = timed(bare["sample"], "sample")  # type: ignore[method-assign]
    try:
        total, _ = bare_run("replay", stream, epochs, 0)
    finally:
        for n, f in bare.items():
            setattr(Reservoir, n, f)
    out |= {
        "bare_run_seconds": total,
        **{f"bare_{k}_seconds": v for k, v in spent.items()},
        "bare_share": sum(spent.values()) / total,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable figures on busy machines)")
    ap.add_argument("--strategies", default=",".join(BARE), help=f"comma-separated subset of {', '.join(BARE)}")
    ap.add_argument("--profile", action="store_true", help="also time the buffer inside a replay run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BARE))
    if unknown:
        ap.error(f"no bare loop for {', '.join(unknown)}; choose from {', '.join(BARE)}")
    stream = build_benchmark("split-mnist")
    load_start = os.getloadavg()[0]
    times: dict[str, dict[str, list[float]]] = {n: {"p": [], "b": [], "pa": [], "ba": []} for n in names}
    for n in names:  # warm-up both paths
        perennial_run(n, stream, 1, 0)
        bare_run(n, stream, 1, 0)
    for rep in range(args.repeats):  # interleaved: every strategy once per repetition, sides alternating
        for k, n in enumerate(names):
            sides = [("p", perennial_run), ("b", bare_run)]
            if (rep + k) % 2:
                sides.reverse()
            for tag, fn in sides:
                sec, acc = fn(n, stream, args.epochs, rep)
                times[n][tag].append(sec)
                times[n][tag + "a"].append(acc)
    results = {}
    for n in names:
        t = times[n]
        p, b = statistics.median(t["p"]), statistics.median(t["b"])
        paired = statistics.median(pi / bi for pi, bi in zip(t["p"], t["b"], strict=True))
        results[n] = {
            "perennial_cpu_seconds": p,
            "bare_cpu_seconds": b,
            "ratio": p / b,
            "paired_ratio": paired,
            "perennial_times": t["p"],
            "bare_times": t["b"],
            "perennial_final_acc": statistics.mean(t["pa"]),
            "bare_final_acc": statistics.mean(t["ba"]),
        }
        print(
            f"{n:7s} perennial {p:6.2f}s  bare {b:6.2f}s  ratio {p / b:.3f} (paired {paired:.3f})  "
            f"acc {statistics.mean(t['pa']):.3f} vs {statistics.mean(t['ba']):.3f}",
            flush=True,
        )
    out: dict = {
        "ratio": max(r["ratio"] for r in results.values()),
        "results": results,
        "protocol": {
            "benchmark": "split-mnist",
            "scenario": "class",
            "model": "mlp 784-400-400",
            "optimizer": "adam",
            "lr": LR,
            "batch_size": BATCH,
            "epochs": args.epochs,
            "replay_buffer": BUFFER,
            "repeats": args.repeats,
            "time": "process CPU time, training + evaluation",
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
        },
    }
    if args.profile:
        prof = buffer_profile(stream, args.epochs)
        out["buffer_profile"] = prof
        print(
            f"buffer in a replay run: insert {prof['insert_seconds']:.3f}s + sample {prof['sample_seconds']:.3f}s "
            f"of {prof['run_seconds']:.2f}s = {100 * prof['share']:.1f}%; bare loop's reservoir: insert "
            f"{prof['bare_insert_seconds']:.3f}s + sample {prof['bare_sample_seconds']:.3f}s of "
            f"{prof['bare_run_seconds']:.2f}s = {100 * prof['bare_share']:.1f}%"
        )
    print(f"load average {load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
