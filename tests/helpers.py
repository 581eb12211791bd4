"""Small synthetic data for fast tests."""

from __future__ import annotations

import torch

from perennial.streams import Stream, split_by_class


def make_blobs(
    n_per_class: int = 30,
    n_classes: int = 6,
    dim: int = 8,
    seed: int = 0,
    spread: float = 3.0,
    sample_seed: int | None = None,
):
    """Gaussian blobs around centers fixed by ``seed``; ``sample_seed`` draws another sample of them."""
    centers = torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(seed)) * spread
    g = torch.Generator().manual_seed(seed + 1 if sample_seed is None else sample_seed)
    x = centers.repeat_interleave(n_per_class, 0) + torch.randn(n_classes * n_per_class, dim, generator=g)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return x, y


def tiny_stream(scenario: str = "class", n_classes: int = 6, per_exp: int = 2, seed: int = 0) -> Stream:
    xtr, ytr = make_blobs(30, n_classes, seed=seed)
    xte, yte = make_blobs(10, n_classes, seed=seed, sample_seed=seed + 100)
    return split_by_class(xtr, ytr, xte, yte, classes_per_exp=per_exp, scenario=scenario, name="tiny")


def tiny_text_stream(n_domains: int = 3, context: int = 16, docs: int = 12, seed: int = 0) -> Stream:
    """A small language-modelling stream: domain d is random text over its own 8 letters
    (ASCII ``a + 8d`` ...), so every token tells which domain it came from."""
    from perennial.streams.text import Domain, text_stream

    g = torch.Generator().manual_seed(seed)
    domains = []
    for d in range(n_domains):
        letters = torch.arange(8) + ord("a") + 8 * d
        documents = []
        for i in range(docs):
            ids = letters[torch.randint(8, (400,), generator=g)]
            documents.append((f"doc{i}", bytes(ids.tolist())))
        domains.append(Domain(f"dom{d}", documents))
    return text_stream(domains, context=context, max_bytes=3000, val_bytes=600, name="tiny-text")


#: summary keys that are wall-clock measurements (they differ between otherwise identical runs)
TIMING = {
    "seconds",
    "train_seconds",
    "eval_seconds",
    "continual_eval_seconds",
    "experience_train_seconds",
    "experience_eval_seconds",
}
