"""Streaming class-conditional statistics of feature vectors (counts, means, covariances).

The memory of prototype methods: instead of samples, a learner keeps per class the number of
feature vectors seen, their sum and, when asked, their second moments, either one matrix
shared by all classes (``"pooled"``, for linear discriminant analysis) or one per class
(``"per_class"``, for class-conditional Gaussians). Updates are exact and order-independent
(sums of ``x`` and ``x x^T``, accumulated in float64), so feeding data in any batching gives
the same statistics. Storage is fixed: O(classes x dim) plus O(dim^2) or O(classes x dim^2).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

SecondMoments = Literal["none", "pooled", "per_class"]


class ClassStats:
    def __init__(
        self,
        n_classes: int,
        dim: int,
        second: SecondMoments = "none",
        device: torch.device | str | None = None,
    ):
        if n_classes < 1 or dim < 1:
            raise ValueError(f"ClassStats needs n_classes >= 1 and dim >= 1, got {n_classes}, {dim}")
        if second not in ("none", "pooled", "per_class"):
            raise ValueError(f"second must be 'none', 'pooled' or 'per_class', got {second!r}")
        self.n_classes, self.dim, self.second = int(n_classes), int(dim), second
        f64 = {"dtype": torch.float64, "device": device}
        self.counts = torch.zeros(n_classes, **f64)
        self.sums = torch.zeros(n_classes, dim, **f64)
        shape = {"none": (0,), "pooled": (dim, dim), "per_class": (n_classes, dim, dim)}[second]
        self.moments = torch.zeros(shape, **f64)

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add feature vectors ``(N, dim)`` with integer labels ``(N,)``."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must have shape (N, {self.dim}), got {tuple(features.shape)}")
        f = features.to(self.sums.device, torch.float64)
        y = labels.to(self.sums.device, torch.long)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ValueError(f"labels must be in [0, {self.n_classes}), got {int(y.min())}..{int(y.max())}")
        self.counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        self.sums.index_add_(0, y, f)
        if self.second == "pooled":
            self.moments += f.T @ f
        elif self.second == "per_class":
            for c in torch.unique(y).tolist():  # one matrix product per class present
                fc = f[y == c]
                self.moments[c] += fc.T @ fc

    @property
    def seen(self) -> Tensor:
        """Boolean mask of the classes with at least one sample."""
        return self.counts > 0

    def means(self) -> Tensor:
        """Class means ``(n_classes, dim)`` (zeros for unseen classes)."""
        return self.sums / self.counts.clamp_min(1.0)[:, None]

    def class_covariances(self) -> Tensor:
        """Per-class covariance matrices ``(n_classes, dim, dim)`` (unbiased; zeros when unseen)."""
        if self.second != "per_class":
            raise ValueError("class covariances need ClassStats(..., second='per_class')")
        mu = self.means()
        n = self.counts[:, None, None]
        cov = (self.moments - n * mu[:, :, None] * mu[:, None, :]) / (n - 1).clamp_min(1.0)
        return (cov + cov.transpose(1, 2)) / 2

    def pooled_covariance(self) -> Tensor:
        """Within-class covariance shared by all classes ``(dim, dim)`` (LDA)."""
        if self.second != "pooled":
            raise ValueError("a pooled covariance needs ClassStats(..., second='pooled')")
        mu = self.means()
        between = (mu * self.counts[:, None]).T @ mu  # sum_c n_c mu_c mu_c^T
        dof = max(float(self.counts.sum()) - int(self.seen.sum()), 1.0)
        cov = (self.moments - between) / dof
        return (cov + cov.T) / 2

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, object]:
        return {
            "n_classes": self.n_classes,
            "dim": self.dim,
            "second": self.second,
            "counts": self.counts.clone(),
            "sums": self.sums.clone(),
            "moments": self.moments.clone(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        shape = (state["n_classes"], state["dim"], state["second"])
        if shape != (self.n_classes, self.dim, self.second):
            raise ValueError(
                f"class statistics are for (n_classes, dim, second)={shape}; "
                f"these are {(self.n_classes, self.dim, self.second)}"
            )
        for k in ("counts", "sums", "moments"):
            setattr(self, k, state[k].to(self.sums.device).clone())  # type: ignore[attr-defined]
