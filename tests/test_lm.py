"""Continual pre-training of language models: text streams, the transformer, schedules,
phases, replay mixing, LM metrics, resume and sampling."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from helpers import tiny_text_stream
from perennial import api
from perennial.cli import app
from perennial.config import build_config
from perennial.errors import ConfigError, DataError, ScenarioError
from perennial.evaluation import (
    adaptation,
    adaptation_per_experience,
    lm_summary,
    loss_forgetting,
    loss_forgetting_per_experience,
)
from perennial.models import build_model, generate
from perennial.store import RunStore
from perennial.strategies import EWC, Batch, Naive, Replay
from perennial.strategies.replay import replayed_rows
from perennial.streams import build_benchmark
from perennial.streams.text import ByteTokenizer, Domain, split_documents, text_domains, text_stream, windows
from perennial.train import Callback, EvalPolicy, TrainSettings, fit, lr_multiplier

runner = CliRunner()


def tiny_gpt(stream, seed: int = 0, **kw):
    torch.manual_seed(seed)
    params = {"n_layer": 1, "d_model": 32, "n_head": 2, **kw}
    return build_model("gpt", stream.input_shape, stream.n_classes, **params)


SMALL = TrainSettings(steps=12, batch_size=16, lr=1e-2, optimizer="adamw")


def small(**over) -> TrainSettings:
    """SMALL with some fields changed (validated, so phases become Phase objects)."""
    return TrainSettings.model_validate({**SMALL.model_dump(), **over})


# ------------------------------------------------------------------ streams
def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "def f(x):\n    return 'héllo ∑ 世界'\n"
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.max() < 256 and len(ids) == len(text.encode())
    assert tok.decode(ids.tolist()) == text


def test_windows_are_shifted_by_one_token():
    x, y = windows(np.arange(100, dtype=np.int64), 8)
    assert x.shape == y.shape == (12, 8) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:-1, -1], x[1:, 0])
    assert int(y[-1, -1]) == 96  # non-overlapping windows of 9 tokens sharing one boundary token


def test_text_split_is_deterministic_and_disjoint_by_document():
    docs = [(f"d{i}", f"<doc {i:03d}>".encode() * 20) for i in range(40)]
    train, val = split_documents(docs, max_bytes=3000, val_bytes=500)
    assert (train, val) == split_documents(docs, max_bytes=3000, val_bytes=500)
    assert len(train) <= 3000 + 2 * 40 and 0 < len(val) <= 500 + 2 * 40
    tr_ids = {m for m in train.split(b"<doc ")[1:]}
    va_ids = {m for m in val.split(b"<doc ")[1:]}
    assert tr_ids and va_ids and not {t[:3] for t in tr_ids} & {v[:3] for v in va_ids}


def test_builtin_text_domains_are_real_different_and_deterministic():
    a = text_domains(context=32, max_bytes=20_000, val_bytes=2_000)
    b = text_domains(context=32, max_bytes=20_000, val_bytes=2_000)
    assert a.kind == "lm" and a.scenario == "domain" and a.n_classes == 256 and a.input_shape == (32,)
    assert [e.name for e in a] == ["prose", "python", "c"]
    for ea, eb in zip(a, b, strict=True):
        assert torch.equal(ea.train.x, eb.train.x) and torch.equal(ea.test.y, eb.test.y)
    text = {e.name: bytes(e.train.x[:50].flatten().tolist()) for e in a}
    assert text["python"].count(b"def ") + text["python"].count(b"import ") > 3
    assert text["c"].count(b"#") + text["c"].count(b"Py") > 10
    assert text["prose"].count(b" the ") > 10
    a.validate()


def test_text_dir_domains_and_errors(tmp_path):
    for name, word in (("legal", b"whereas the party "), ("poems", b"o moon of night ")):
        (tmp_path / name).mkdir()
        for i in range(5):
            (tmp_path / name / f"{i}.txt").write_bytes(word * 60 + str(i).encode())
    s = build_benchmark("text-domains", path=str(tmp_path), context=16, val_bytes=300)
    assert [e.name for e in s] == ["legal", "poems"]
    s2 = build_benchmark("text-domains", path=str(tmp_path), domains=["poems"], context=16, val_bytes=300)
    assert [e.name for e in s2] == ["poems"]
    with pytest.raises(DataError, match="no sub-folder 'prose'"):
        build_benchmark("text-domains", path=str(tmp_path), domains=["prose"])
    with pytest.raises(DataError, match="unknown text domain 'latin'"):
        build_benchmark("text-domains", domains=["latin"])
    with pytest.raises(DataError, match="too small for context"):
        build_benchmark("text-domains", path=str(tmp_path), context=2000, val_bytes=300)


def test_lm_stream_validation_names_the_problem():
    s = tiny_text_stream()
    bad = Domain("x", [("a", b"abc" * 100), ("b", b"def" * 100)])
    stream = text_stream([bad], context=8, val_bytes=100)
    from dataclasses import replace

    broken = replace(stream, n_classes=50)  # ids up to 'f' (102) exceed the vocabulary
    with pytest.raises(DataError, match="vocabulary has 50 tokens"):
        broken.validate()
    assert s.validate() is s


# -------------------------------------------------------------------- model
def test_transformer_is_causal():
    torch.manual_seed(0)
    model = build_model("tiny-gpt", (24,), 256).eval()
    x = torch.randint(0, 256, (3, 24))
    for p in (0, 7, 23):
        x2 = x.clone()
        x2[:, p] = (x2[:, p] + 1) % 256
        a, b = model(x), model(x2)
        assert a.shape == (3, 24, 256)
        assert torch.equal(a[:, :p], b[:, :p]), f"changing token {p} changed earlier logits"
        assert not torch.allclose(a[:, p], b[:, p])


def test_gpt_refuses_classification_inputs_and_bad_widths():
    with pytest.raises(ValueError, match="token windows"):
        build_model("gpt", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="divisible"):
        build_model("gpt", (16,), 256, d_model=30, n_head=4)


def test_generate_is_seeded_and_respects_context():
    torch.manual_seed(0)
    model = build_model("gpt", (8,), 256, n_layer=1, d_model=16, n_head=2)
    prompt = torch.tensor(list(b"def "))
    out1 = generate(model, prompt, 20, context=8, generator=torch.Generator().manual_seed(1))
    out2 = generate(model, prompt, 20, context=8, generator=torch.Generator().manual_seed(1))
    assert out1.shape == (20,) and torch.equal(out1, out2)
    greedy = generate(model, prompt, 5, context=8, temperature=0)
    top1 = generate(model, prompt, 5, context=8, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy, top1)


# ---------------------------------------------------------------- schedules
@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 400),
    warmup=st.integers(0, 50),
    min_ratio=st.floats(0, 1),
    decay=st.floats(0, 1),
    kind=st.sampled_from(["constant", "cosine", "linear", "wsd"]),
)
def test_schedules_stay_in_range_and_decay_monotonically(total, warmup, min_ratio, decay, kind):
    m = [lr_multiplier(k, total, kind, warmup, min_ratio, decay) for k in range(total)]
    assert all(0 < v <= 1 + 1e-12 for v in m[:warmup])
    assert all(min(min_ratio, 1.0) - 1e-9 <= v <= 1 + 1e-12 for v in m[warmup:])
    assert all(a < b for a, b in itertools.pairwise(m[: min(warmup, total)]))
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(m[warmup:])), "no rise after warmup"


def test_wsd_is_flat_then_anneals_to_the_floor():
    m = [lr_multiplier(k, 100, "wsd", 10, 0.1, 0.2) for k in range(100)]
    assert m[9] == 1.0 and all(v == 1.0 for v in m[10:80])
    assert m[80] < 1.0 and math.isclose(m[-1], 0.1)
    c = [lr_multiplier(k, 100, "cosine", 10, 0.1) for k in range(100)]
    assert sum(m) > sum(c)  # the stable phase spends more of the budget at the maximum LR


# ------------------------------------------------------------------ metrics
def test_lm_metrics_by_hand():
    L = [[2.0, 4.0, 5.0], [2.5, 1.5, 4.5], [3.0, 1.8, 1.0]]
    assert loss_forgetting_per_experience(L).tolist() == [1.0, pytest.approx(0.3)]
    assert loss_forgetting(L) == pytest.approx(0.65)
    assert adaptation_per_experience(L).tolist() == [2.5, 3.5] and adaptation(L) == 3.0
    s = lm_summary(L, R=[[0.5, 0.1, 0.1], [0.4, 0.6, 0.1], [0.3, 0.5, 0.7]], initial_loss=[5.5, 5.5, 5.5])
    assert s["loss"] == pytest.approx(1.9333333) and s["perplexity"] == pytest.approx(math.exp(1.9333333))
    assert s["forgetting_first"] == 1.0 and s["learning_loss"] == pytest.approx(1.5)
    assert s["acc"] == pytest.approx(0.5) and s["initial_loss"] == 5.5
    one = lm_summary([[2.0, 3.0]])
    assert math.isnan(one["forgetting"]) and math.isnan(one["adaptation"])
    with pytest.raises(ValueError, match="inf"):
        loss_forgetting([[float("inf"), 1.0]])
    assert math.isnan(loss_forgetting([[2.0, None], [None, 1.0]]))  # needs L[1, 0], not measured


# ------------------------------------------------------------ replay mixing
@given(ratio=st.floats(0, 0.99), n=st.integers(1, 64), steps=st.integers(1, 60))
def test_replayed_rows_total_exactly_the_ratio(ratio, n, steps):
    rows = [replayed_rows(ratio, n, k) for k in range(steps)]
    assert all(0 <= r <= n for r in rows)
    assert sum(rows) == math.floor(ratio * n * steps + 0.5)


def domain_of(x: torch.Tensor) -> torch.Tensor:
    """The domain of each token window: every domain has its own 8 letters (separators are newlines)."""
    return torch.where(x >= ord("a"), (x - ord("a")) // 8, -1).amax(1)


class Spy(Callback):
    def __init__(self):
        self.batches: list[tuple[int, Batch]] = []

    def on_step_end(self, ctx, batch, loss):
        self.batches.append((ctx.exp_index, batch))


def test_ratio_replay_replaces_rows_with_earlier_domains_only():
    s = tiny_text_stream()
    spy = Spy()
    full = small(**{"steps": 11})  # 188 windows: 11 full batches of 16 per epoch
    fit(tiny_gpt(s), s, Replay(ratio=0.25), full, seed=0, callbacks=[spy])
    for exp, b in spy.batches:
        assert len(b) == 16  # compute-equivalent: replayed rows replace new ones
        domain = domain_of(b.x)
        assert bool((domain[: b.n_new] == exp).all())
        assert bool((domain[b.n_new :] < exp).all()), "replay must draw from earlier domains only"
    first = [b for e, b in spy.batches if e == 0]
    assert all(b.n_new == 16 for b in first)
    for exp in (1, 2):
        replayed = sum(len(b) - b.n_new for e, b in spy.batches if e == exp)
        assert replayed == round(0.25 * 16 * 11)
    seen = {int(d) for e, b in spy.batches if e == 2 for d in domain_of(b.x[b.n_new :])}
    assert seen == {0, 1}, "draws cover all earlier domains"


def test_phase_replay_ratio_overrides_and_needs_ratio_mode():
    s = tiny_text_stream()
    spy = Spy()
    phases = [{}, {"replay_ratio": 0.5}, {"replay_ratio": 0.0}]
    full = small(**{"steps": 11, "phases": phases})
    fit(tiny_gpt(s), s, Replay(ratio=0.1), full, seed=0, callbacks=[spy])
    per = {e: sum(len(b) - b.n_new for x, b in spy.batches if x == e) for e in range(3)}
    assert per == {0: 0, 1: 88, 2: 0}
    with pytest.raises(ConfigError, match=r"train\.phases\.1\.replay_ratio: needs strategy replay in ratio mode"):
        build_config(benchmark="text-domains", strategy="naive", overrides={"train": {"phases": phases}})
    with pytest.raises(ValueError, match="drop buffer_size"):
        Replay(ratio=0.1, buffer_size=10)


# ------------------------------------------------------------------- phases
class Snap(Callback):
    def __init__(self):
        self.states = []

    def on_experience_end(self, ctx, acc, loss):
        self.states.append({k: v.clone() for k, v in ctx.model.state_dict().items()})


def test_phases_set_steps_lr_and_freeze_per_experience():
    s = tiny_text_stream()
    model = tiny_gpt(s)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    snap = Snap()
    phases = [{"steps": 5, "freeze": ["body.*"]}, {"steps": 0}, {"lr": 0.0}]
    r = fit(model, s, Naive(), small(**{"phases": phases}), seed=0, callbacks=[snap], eval_policy=EvalPolicy("all"))
    assert r.steps == 5 + 0 + 12
    s0, s1, s2 = snap.states
    assert all(torch.equal(s0[k], init[k]) for k in init if k.startswith("body."))
    assert not torch.equal(s0["head.linear.weight"], init["head.linear.weight"])
    assert all(torch.equal(s0[k], s1[k]) for k in init)  # 0 steps: evaluation only
    assert r.loss_matrix[0] == r.loss_matrix[1]
    assert all(torch.equal(s1[k], s2[k]) for k in init)  # lr 0 changes nothing
    assert all(p.requires_grad for p in model.parameters()), "trainability is restored after fit"


def test_phase_problems_are_reported():
    s = tiny_text_stream()
    with pytest.raises(ConfigError, match="4 phases but the stream has 3"):
        fit(tiny_gpt(s), s, Naive(), small(**{"phases": [{}] * 4}))
    with pytest.raises(ConfigError, match=r"'bdy\.\*' matches no parameter"):
        fit(tiny_gpt(s), s, Naive(), small(**{"phases": [{"freeze": ["bdy.*"]}]}))
    with pytest.raises(ConfigError) as e:
        build_config(
            benchmark="text-domains",
            overrides={"train": {"phases": [{"steps": -1}, {"lr": 0.1, "warmup": 3}, {"schedule": "cosin"}]}},
        )
    fields = [f for f, _ in e.value.problems]
    assert fields == ["train.phases.0.steps", "train.phases.1.warmup", "train.phases.2.schedule"], fields


def test_lm_kind_is_checked_for_models_and_strategies():
    with pytest.raises(ConfigError) as e:
        build_config(benchmark="text-domains", strategy="ewc", overrides={"model": {"name": "mlp"}})
    msg = str(e.value)
    assert "mlp is a classification model but text-domains is a language-modelling benchmark" in msg
    assert "ewc does not support language-modelling benchmarks; use cumulative, joint, naive, replay" in msg
    with pytest.raises(ConfigError, match="tiny-gpt is a language-modelling model"):
        build_config(benchmark="split-digits", overrides={"model": {"name": "tiny-gpt"}})
    s = tiny_text_stream()
    with pytest.raises(ScenarioError, match="does not support language-modelling streams"):
        fit(tiny_gpt(s), s, EWC(), SMALL)


@pytest.mark.parametrize(
    "strategy", [Naive(), Replay(ratio=0.2), Replay(buffer_size=40)], ids=["naive", "mix", "buffer"]
)
def test_lm_fit_learns_and_is_deterministic(strategy):
    s = tiny_text_stream()
    cls = type(strategy)
    params = strategy.model_dump(exclude_unset=True)
    r1 = fit(tiny_gpt(s), s, cls(**params), SMALL, seed=0)
    r2 = fit(tiny_gpt(s), s, cls(**params), SMALL, seed=0)
    assert r1.loss_matrix == r2.loss_matrix and r1.accuracy_matrix == r2.accuracy_matrix
    assert r1.random_init_loss[0] > 5.0  # about ln 256 before training
    assert r1.loss_matrix[0][0] < 3.5  # learns its domain's 8 letters
    assert r1.loss_matrix[0][0] < r1.loss_matrix[0][1]


# ------------------------------------------------------------- run and CLI
LM = ["train.steps=6", "train.batch_size=8", "model.n_layer=1", "model.d_model=32", "model.n_head=2"]


def lm_config(tmp_path, strategy="replay", extra=(), **kw):
    root = tmp_path / "text"
    if not root.exists():
        g = random.Random(0)
        for d, letters in enumerate(("abcdefgh", "ijklmnop")):
            (root / f"d{d}").mkdir(parents=True)
            for i in range(6):
                (root / f"d{d}" / f"{i}.txt").write_text("".join(g.choice(letters) for _ in range(600)))
    return build_config(
        overrides=[*LM, "benchmark.context=16", "benchmark.val_bytes=400", *extra],
        strategy=strategy,
        text_dir=str(root),
        **kw,
    )


def test_lm_run_resumes_bit_identical_after_kills(tmp_path):
    from test_resume import results, run_with_kills

    store = RunStore(tmp_path / "st")
    cfg = lm_config(
        tmp_path,
        extra=["strategy.ratio=0.25", 'train.phases=[{}, {"steps": 9, "warmup_steps": 3}]'],
        checkpoint_every=4,
    )
    ref = api.run(cfg, store=store, run_id="ref")
    assert ref.metrics["steps"] == 15 and "perplexity" in ref.metrics
    kills = sorted(random.Random(6).sample(range(1, 15), 2))
    got = run_with_kills(store, cfg, "victim", kills)
    assert results(got) == results(ref), f"kills at {kills} changed the results"
    a, b = store.load_model("ref"), store.load_model("victim")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_cli_run_json_and_generate(tmp_path):
    out = tmp_path / "r.json"
    root = tmp_path / "st"
    cfg = lm_config(tmp_path)  # writes the text folders
    r = runner.invoke(
        app,
        ["run", "--text-dir", str(tmp_path / "text"), "-m", "gpt", "-s", "replay", "--set", "strategy.ratio=0.05"]
        + [x for kv in [*LM, "benchmark.context=16", "benchmark.val_bytes=400"] for x in ("--set", kv)]
        + ["--store", str(root), "--run-id", "lm", "--json", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "validation loss" in r.output and "perennial generate lm" in r.output
    d = json.loads(out.read_text())
    assert len(d["loss_matrix"]) == 2 and d["metrics"]["forgetting"] == pytest.approx(
        d["loss_matrix"][1][0] - d["loss_matrix"][0][0]
    )
    assert d["config"]["strategy"]["ratio"] == 0.05 and cfg.benchmark.name == "text-domains"
    g1 = runner.invoke(app, ["generate", "lm", "--store", str(root), "--prompt", "abc", "-n", "30", "--seed", "3"])
    g2 = runner.invoke(app, ["generate", "lm", "--store", str(root), "--prompt", "abc", "-n", "30", "--seed", "3"])
    assert g1.exit_code == 0 and g1.output == g2.output and g1.output.startswith("abc")
    assert len(g1.output.strip()) >= 20
    bad = runner.invoke(app, ["generate", "nope", "--store", str(root)])
    assert bad.exit_code == 2 and "no run 'nope'" in bad.output and "Traceback" not in bad.output


def test_cli_compare_sweeps_a_parameter(tmp_path):
    lm_config(tmp_path)
    out = tmp_path / "c.json"
    r = runner.invoke(
        app,
        ["compare", "--text-dir", str(tmp_path / "text"), "--strategies", "replay", "--sweep", "strategy.ratio=0,0.5"]
        + [x for kv in [*LM, "benchmark.context=16", "benchmark.val_bytes=400"] for x in ("--set", kv)]
        + ["--seeds", "1", "--store", str(tmp_path / "st"), "--json", str(out)],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["results"]
    assert [row["strategy"] for row in rows] == ["replay strategy.ratio=0", "replay strategy.ratio=0.5"]
    assert all("forgetting_mean" in row and "perplexity_mean" in row for row in rows)
    bad = runner.invoke(app, ["compare", "--sweep", "strategy.ratio", "--store", str(tmp_path / "st")])
    assert bad.exit_code == 2 and "KEY=V1,V2" in bad.output


def test_model_init_continues_from_a_saved_model(tmp_path):
    store = RunStore(tmp_path / "st")
    cfg = lm_config(tmp_path, strategy="naive")
    api.run(cfg, store=store, run_id="base")
    path = store.model_path("base")
    cont = lm_config(tmp_path, strategy="naive", extra=[f"model.init={path}", 'train.phases=[{"steps": 0}]'])
    rec = api.run(cont, store=store, run_id="cont")
    base = store.get("base")
    assert rec.loss_matrix[0] == base.loss_matrix[-1]  # phase 0 evaluates the loaded model only
    with pytest.raises(ConfigError, match="does not exist"):
        lm_config(tmp_path, extra=["model.init=/nonexistent.pt"])


# --------------------------------------------------------------- behaviour
@pytest.mark.slow
def test_replay_reduces_forgetting_of_the_first_domain():
    """Prose, then C headers: with 0% replay the prose loss rises clearly; 25% replay keeps most of it."""
    torch.set_num_threads(1)
    s = text_domains(["prose", "c"], context=32, max_bytes=200_000, val_bytes=8192)
    settings_ = TrainSettings(
        steps=80,
        batch_size=32,
        lr=3e-3,
        optimizer="adamw",
        schedule="cosine",
        warmup_steps=8,
        min_lr_ratio=0.1,
        grad_clip=1.0,
        eval_batch_size=256,
        phases=[{"steps": 150}],
    )
    forgetting = {}
    for ratio in (0.0, 0.25):
        fs = []
        for seed in (0, 1):
            model = tiny_gpt(s, seed, n_layer=2, d_model=64, n_head=4)
            r = fit(model, s, Replay(ratio=ratio), settings_, seed=seed)
            fs.append(r.loss_matrix[1][0] - r.loss_matrix[0][0])
        forgetting[ratio] = sum(fs) / len(fs)
    assert forgetting[0.0] > 0.1, forgetting
    assert forgetting[0.25] < 0.5 * forgetting[0.0], forgetting


def test_tokenizers_file_tokenizer(tmp_path):
    """The optional Hugging Face ``tokenizers`` path: a BPE trained here, read from its JSON file."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    from perennial.streams.text import load_tokenizer

    text = ["def add(a, b):\n    return a + b\n", "the quick brown fox jumps over the lazy dog\n"] * 50
    tok = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    t = load_tokenizer(f"tokenizers:{path}")
    ids = t.encode("def add(a, b):")
    assert t.decode(ids.tolist()) == "def add(a, b):" and len(ids) < len("def add(a, b):")
    for name in ("code", "prose"):
        (tmp_path / "text" / name).mkdir(parents=True)
    for i in range(4):
        (tmp_path / "text" / "code" / f"{i}.py").write_text(text[0] * 30)
        (tmp_path / "text" / "prose" / f"{i}.txt").write_text(text[1] * 30)
    s = text_domains(path=str(tmp_path / "text"), context=8, val_bytes=200, tokenizer=f"tokenizers:{path}")
    assert s.n_classes == t.vocab_size and s.meta["tokenizer"] == f"tokenizers:{path}"
    s.validate()
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(f"tokenizers:{tmp_path}/missing.json")
    with pytest.raises(DataError, match="unknown tokenizer 'bpe'"):
        load_tokenizer("bpe")


def test_lm_run_with_continual_evaluation(tmp_path):
    """Per-step evaluation works on language-model runs (per-token accuracy and loss)."""
    from perennial import api
    from perennial.config import build_config
    from perennial.store import RunStore

    cfg = build_config(
        benchmark="text-domains",
        model="tiny-gpt",
        overrides=["train.steps=6", "train.batch_size=8", "eval.every=3", "eval.budget=16"],
    )
    rec = api.run(cfg, store=RunStore(tmp_path), run_id="lm")
    log = RunStore(tmp_path).eval_log("lm")
    assert log and all(0.0 <= r.acc <= 1.0 and r.loss > 0 for r in log)
    assert "min_acc" in rec.summary()["metrics"]
