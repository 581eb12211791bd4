"""Unit tests of the strategy zoo's building blocks: herding, buffer policies, the rehearsal
schedule, the GEM / A-GEM projections, SI and MAS importances, BiC's pieces, scenario errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import tiny_stream
from perennial.config import build_config
from perennial.errors import ConfigError, ScenarioError
from perennial.memory import Buffer, herding_order, herding_ranks
from perennial.models import build_model
from perennial.strategies import AGEM, SI, STRATEGIES, Batch, Context, GDumb, ICaRL, Replay
from perennial.strategies.bic import fit_bias, holdout_per_class
from perennial.strategies.ewc import per_sample_gradient_stat
from perennial.strategies.gem import gem_project
from perennial.strategies.mas import squared_output_norm
from perennial.strategies.rehearsal import sample_by_age
from perennial.train import Callback, TrainSettings, fit


def model_for(stream, hidden=(16,), seed=0):
    torch.manual_seed(seed)
    return build_model(
        "mlp", stream.input_shape, stream.n_classes, task_classes=stream.task_classes or None, hidden=list(hidden)
    )


def ctx_for(stream, model) -> Context:
    return Context(model=model, stream=stream, device=torch.device("cpu"), seed=0, batch_size=16)


# ------------------------------------------------------------------------------ herding
def test_herding_first_pick_is_nearest_to_the_mean_and_never_repeats():
    f = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    order = herding_order(f, 50)
    assert sorted(order.tolist()) == list(range(50))
    assert int(order[0]) == int(torch.argmin((f - f.mean(0)).pow(2).sum(1)))


def test_herding_prefix_summarises_the_class_better_than_random_subsets():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(200, 8, generator=g) * torch.linspace(0.2, 3.0, 8)
    mu = f.mean(0)
    for m in (5, 10, 20):
        herd = (f[herding_order(f, m)].mean(0) - mu).norm()
        rand = torch.stack([(f[torch.randperm(200, generator=g)[:m]].mean(0) - mu).norm() for _ in range(200)])
        assert herd < rand.quantile(0.01), m  # better than 99% of random subsets of the same size


def test_herding_ranks_are_per_class():
    f = torch.randn(30, 3, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2] * 10)
    idx, rank = herding_ranks(f, y, 4)
    assert len(idx) == 12
    for c in range(3):
        assert sorted(rank[y[idx] == c].tolist()) == [0, 1, 2, 3]


def test_herding_buffer_keeps_the_best_ranked_prefix_of_each_class():
    buf = Buffer(6, "herding")
    x = torch.arange(8, dtype=torch.float32)[:, None]
    # class 0: samples 0..3 with herding ranks 3,2,1,0; class 1: samples 4..7 with ranks 0..3
    buf.add(x[:4], torch.zeros(4, dtype=torch.long), priority=torch.tensor([3.0, 2.0, 1.0, 0.0]))
    assert sorted(buf.x[:, 0].tolist()) == [0, 1, 2, 3]
    buf.add(x[4:], torch.ones(4, dtype=torch.long), priority=torch.arange(4.0))
    kept = sorted(buf.x[:, 0].long().tolist())
    assert kept == [1, 2, 3, 4, 5, 6]  # each class keeps its 3 best-ranked samples


def test_herding_buffer_needs_priorities():
    with pytest.raises(ValueError, match="herding_ranks"):
        Buffer(4, "herding").add(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="reservoir"):
        Buffer(4, "reservoir").add(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), priority=torch.zeros(2))


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced", "herding"])
def test_every_buffer_method_accepts_every_policy(policy):
    s = tiny_stream()
    for name in ("replay", "der", "derpp", "er-ace", "agem", "gem", "gdumb", "icarl", "bic"):
        strategy = STRATEGIES.get(name)(buffer_size=12, policy=policy)
        fit(model_for(s), s, strategy, TrainSettings(epochs=1, batch_size=16), seed=0)
        assert 0 < len(strategy.buffer) <= 12
        if policy != "reservoir":  # class-balanced: counts differ by at most one
            counts = torch.bincount(strategy.buffer.y, minlength=6)
            assert int(counts.max() - counts[counts > 0].min()) <= 1, (name, counts)


# ------------------------------------------------------------------- rehearsal schedule
@settings(max_examples=15, deadline=None)
@given(alpha=st.floats(0.0, 3.0), sizes=st.lists(st.integers(1, 30), min_size=2, max_size=5))
def test_power_schedule_draws_experiences_by_age(alpha, sizes):
    buf = Buffer(sum(sizes), "reservoir", seed=3)
    for e, n in enumerate(sizes):
        buf.add(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), exp=torch.full((n,), e, dtype=torch.long))
    current = len(sizes) - 1  # the last experience is the current one: never replayed
    draws = sample_by_age(buf, 20000, current, alpha)["exp"]
    freq = torch.bincount(draws, minlength=len(sizes)).double() / 20000
    want = torch.tensor([(current - e) ** -alpha for e in range(current)] + [0.0], dtype=torch.float64)
    want /= want.sum()
    assert torch.allclose(freq, want, atol=0.02)
    assert sample_by_age(buf, 10, 0, alpha) == {}  # nothing earlier than experience 0


def test_uniform_schedule_is_unchanged_replay():
    s = tiny_stream()
    r1 = fit(model_for(s), s, Replay(buffer_size=24), TrainSettings(epochs=2, batch_size=16), seed=0)
    r2 = fit(model_for(s), s, Replay(buffer_size=24, schedule="uniform"), TrainSettings(epochs=2, batch_size=16))
    assert r1.accuracy_matrix == r2.accuracy_matrix


# ------------------------------------------------------------------------------- GEM
@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 5), p=st.integers(6, 60), seed=st.integers(0, 10_000))
def test_gem_projection_solves_the_quadratic_program(k, p, seed):
    rng = np.random.default_rng(seed)
    G, g = rng.normal(size=(k, p)), rng.normal(size=p)
    z = gem_project(g, G, margin=0.0, eps=1e-10)
    # KKT of min ||z - g||^2 s.t. G z >= 0: feasible, z = g + G^T v with v >= 0, v_i (G z)_i = 0
    assert (G @ z >= -1e-6).all()
    v, *_ = np.linalg.lstsq(G.T, z - g, rcond=None)
    assert np.allclose(G.T @ v, z - g, atol=1e-6)
    assert (v >= -1e-6).all()
    assert np.allclose(v * (G @ z), 0.0, atol=1e-5)
    if (G @ g >= 0).all():
        assert np.allclose(z, g, atol=1e-6)


def test_gem_margin_biases_towards_positive_transfer():
    rng = np.random.default_rng(0)
    G, g = rng.normal(size=(3, 20)), rng.normal(size=20)
    g -= 2 * G[0] * (G[0] @ g) / (G[0] @ G[0]) + G[0]  # make sure constraint 0 is violated
    z0, z1 = gem_project(g, G, margin=0.0), gem_project(g, G, margin=0.5)
    assert (G @ z1).min() > (G @ z0).min() - 1e-9


def test_agem_projects_only_conflicting_gradients():
    s = tiny_stream()
    model = model_for(s)
    ctx = ctx_for(s, model)
    agem = AGEM(buffer_size=30, memory_batch_size=30)
    agem.setup(ctx)
    agem.buffer.add(s[0].train.x, s[0].train.y, s[0].train.t)
    params = [p for p in model.parameters()]
    x, y = s[1].train.x[:16], s[1].train.y[:16]
    for flip in (1.0, -1.0):
        model.zero_grad()
        (flip * F.cross_entropy(model(x), y)).backward()
        before = torch.cat([p.grad.flatten() for p in params])
        gen_state = agem.buffer.generator.get_state()
        agem.before_step(ctx)
        after = torch.cat([p.grad.flatten() for p in params])
        agem.buffer.generator.set_state(gen_state)
        ref = agem.buffer.sample(30)
        model.zero_grad()
        F.cross_entropy(model(ref["x"]), ref["y"]).backward()
        g_ref = torch.cat([p.grad.flatten() for p in params])
        if before @ g_ref >= 0:
            assert torch.equal(before, after)
        else:
            assert abs(float(after @ g_ref)) < 1e-4 * float(g_ref.norm() * before.norm())
            expected = before - (before @ g_ref) / (g_ref @ g_ref) * g_ref
            assert torch.allclose(after, expected, atol=1e-6)


# -------------------------------------------------------------------- SI and MAS
def test_mas_importance_equals_mean_absolute_per_sample_gradient():
    s = tiny_stream("task")
    model = model_for(s, hidden=(5,))
    ctx = ctx_for(s, model)
    split = s[1].train
    fast = per_sample_gradient_stat(
        ctx, split, objective=squared_output_norm, stat="abs", max_samples=None, batch_size=7, seed=0
    )
    slow = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for i in range(len(split)):
        model.zero_grad()
        squared_output_norm(model(split.x[i : i + 1], split.t[i : i + 1]), split.y[i : i + 1]).sum().backward()
        for k, p in model.named_parameters():
            slow[k] += p.grad.abs() / len(split)
    for k in slow:
        assert torch.allclose(fast[k], slow[k], rtol=1e-4, atol=1e-6), k


def test_si_path_integral_matches_the_loss_decrease_for_plain_sgd():
    # With small SGD steps, sum_k omega_k approximates the decrease of the training loss.
    s = tiny_stream()
    model = model_for(s)
    first = s[0].train
    with torch.no_grad():
        loss0 = float(F.cross_entropy(model(first.x), first.y))
    si = SI(c=1.0)  # c only matters after the first experience; plain SGD needs lr * 2c * Omega < 2

    class Keep(Callback):
        def on_experience_end(self, ctx, acc, loss):
            if ctx.exp_index == 0:
                self.omega = [w.clone() for w in si.state["omega"]]
                with torch.no_grad():
                    self.loss1 = float(F.cross_entropy(ctx.model(first.x), first.y))

    keep = Keep()
    fit(model, s, si, TrainSettings(epochs=20, batch_size=60, lr=0.01, optimizer="sgd"), callbacks=[keep])
    path = sum(float(w.sum()) for w in keep.omega)
    assert path == pytest.approx(loss0 - keep.loss1, rel=0.05)


# ------------------------------------------------------------------------------- BiC
def test_bic_holdout_is_balanced_and_disjoint():
    y = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    held, rest = holdout_per_class(y, 4, torch.Generator().manual_seed(0))
    assert torch.bincount(y[held], minlength=3).tolist() == [4, 4, 3]
    assert sorted(torch.cat([held, rest]).tolist()) == list(range(20))


def test_bic_bias_layer_undoes_a_known_bias():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    clean = F.one_hot(y, 4).float() * 3 + torch.randn(400, 4, generator=g)
    biased = clean.clone()
    biased[:, 2:] = 2.0 * clean[:, 2:] + 4.0  # new classes 2, 3 inflated
    alpha, beta = fit_bias(biased, y, [2, 3], [0, 1, 2, 3], steps=100)
    corrected = biased.clone()
    corrected[:, 2:] = alpha * biased[:, 2:] + beta
    acc = lambda z: float((z.argmax(1) == y).float().mean())  # noqa: E731
    assert acc(corrected) > acc(biased) + 0.2
    assert acc(corrected) >= acc(clean) - 0.03


# --------------------------------------------------------------------- GDumb, iCaRL
def test_gdumb_trains_from_scratch_with_a_fresh_optimizer(monkeypatch):
    import perennial.train.loop as loop

    calls = []
    make = loop.make_optimizer
    monkeypatch.setattr(loop, "make_optimizer", lambda *a: calls.append(1) or make(*a))
    s = tiny_stream()
    model = model_for(s)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    g = GDumb(buffer_size=30)
    fit(model, s, g, TrainSettings(epochs=3, batch_size=16), seed=0)
    assert len(calls) == len(s)  # one optimizer per experience
    assert not torch.equal(model.state_dict()["body.1.weight"], init["body.1.weight"])
    ctx = ctx_for(s, model)
    ctx.experience = s[0]
    g.before_experience(ctx)  # the model back at its initial weights
    assert all(torch.equal(v, init[k]) for k, v in model.state_dict().items())
    data = g.train_split(ctx, s[0].train)  # the memory, without side effects
    assert len(data) == 30 and sorted(torch.bincount(data.y).tolist()) == [5] * 6
    assert len(g.train_split(ctx, s[0].train)) == 30


def test_icarl_means_are_of_normalised_exemplar_features():
    s = tiny_stream()
    model = model_for(s)
    icarl = ICaRL(buffer_size=12)
    fit(model, s, icarl, TrainSettings(epochs=2, batch_size=16), seed=0)
    b = icarl.buffer
    with torch.no_grad():
        f = F.normalize(model.features(b.x), dim=1)
    for c in range(6):
        mu = F.normalize(f[b.y == c].mean(0), dim=0)
        assert torch.allclose(icarl.state["means"][c], mu, atol=1e-5)
    x = s[0].test.x
    with torch.no_grad():
        scores = icarl.predict(ctx_for(s, model), x, s[0].test.t)
        fx = F.normalize(model.features(x), dim=1)
        nearest = torch.cdist(fx, icarl.state["means"]).argmin(1)
    assert torch.equal(scores.argmax(1), nearest)


# ------------------------------------------------------------------ scenario errors
@pytest.mark.parametrize("name", ["icarl", "bic"])
def test_unsupported_scenarios_are_clear_errors(name):
    with pytest.raises(ConfigError, match=f"{name} does not support the task scenario"):
        build_config(strategy=name, scenario="task")
    with pytest.raises(ScenarioError, match="supports: class"):
        fit(model_for(tiny_stream("domain")), tiny_stream("domain"), STRATEGIES.get(name)(), TrainSettings())


def test_der_stores_the_logits_of_the_training_forward_pass():
    s = tiny_stream()
    model = model_for(s)
    der = STRATEGIES.get("der")(buffer_size=200)
    ctx = ctx_for(s, model)
    der.setup(ctx)
    ctx.experience = s[0]
    x, y, t = s[0].train.x[:8], s[0].train.y[:8], s[0].train.t[:8]
    batch = Batch(x, y, t, 8)
    logits = model(x, t)
    der.loss(ctx, batch, logits, F.cross_entropy(logits, y))
    der.after_step(ctx, batch)
    assert torch.equal(der.buffer.get("logits"), logits.detach())
