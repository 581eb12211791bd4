"""Exemplar selection by herding (Welling 2009; Rebuffi et al. 2017, iCaRL Algorithm 4).

Herding picks, one sample at a time, the sample that brings the mean of the chosen samples'
features closest to the mean of the whole class::

    p_k = argmin_x || mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||,   mu = mean_x phi(x)

The order matters: the first ``m`` picks are the best ``m``-sample summary, so shrinking a
class's share of the buffer keeps a prefix of the order (iCaRL's ReduceExemplarSet). These
functions return that order as a *rank* per sample, which :class:`perennial.memory.Buffer`
uses as the eviction priority of its ``herding`` policy (lowest rank kept first).

Cost: ``m`` greedy steps per class, each a vectorised distance over the class's samples
(O(m * n * d) tensor work, once per experience, never per training step).
"""

from __future__ import annotations

import torch
from torch import Tensor


def herding_order(features: Tensor, m: int) -> Tensor:
    """Indices of ``min(m, n)`` samples in herding order (without repetition).

    ``features`` (n, d) are used as given; iCaRL L2-normalises them first
    (:func:`herding_ranks` does).
    """
    n = int(features.shape[0])
    m = min(int(m), n)
    if m <= 0:
        return torch.zeros(0, dtype=torch.long, device=features.device)
    f = features.detach().to(torch.float64)
    mu = f.mean(0)
    chosen = torch.zeros(n, dtype=torch.bool, device=f.device)
    order = torch.empty(m, dtype=torch.long, device=f.device)
    running = torch.zeros_like(mu)
    for k in range(1, m + 1):
        # distance of the mean after adding each candidate, to the class mean: (n,)
        dist = (mu - (running + f) / k).pow(2).sum(1)
        dist = dist.masked_fill(chosen, float("inf"))
        i = int(torch.argmin(dist))
        order[k - 1] = i
        chosen[i] = True
        running += f[i]
    return order


def herding_ranks(features: Tensor, y: Tensor, m: int, *, normalize: bool = True) -> tuple[Tensor, Tensor]:
    """Per class, the first ``m`` samples in herding order.

    Returns ``(index, rank)``: positions into ``features``/``y`` of the selected samples and
    their rank (0 = picked first) inside their class. With ``normalize`` the features are
    L2-normalised first (iCaRL).
    """
    f = torch.nn.functional.normalize(features.detach().float(), dim=1) if normalize else features.detach().float()
    idx, rank = [], []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        order = herding_order(f[members], m)
        idx.append(members[order])
        rank.append(torch.arange(len(order), device=members.device))
    if not idx:
        empty = torch.zeros(0, dtype=torch.long, device=y.device)
        return empty, empty
    return torch.cat(idx), torch.cat(rank)
