"""A small decoder-only transformer (GPT-style) for continual pre-training, and sampling from it.

The model is a :class:`~perennial.models.Classifier` like every other builder: ``body`` maps
token ids (B, T) to features (B, T, d_model) and ``head`` maps them to next-token logits
(B, T, vocab), so the one training loop and every strategy see the usual interface.

Architecture (pre-norm, as GPT-2): token + learned position embeddings, ``n_layer`` blocks of
causal self-attention (``F.scaled_dot_product_attention(is_causal=True)``) and an MLP, a
final LayerNorm, a linear head (not tied to the embedding, so that freezing one leaves the
other free). Weights start N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layer)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # each (B, T, D)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D/H)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, mlp_ratio * d_model)
        self.out = nn.Linear(mlp_ratio * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPTBody(nn.Module):
    """Token ids (B, T) with T <= ``context`` -> features (B, T, d_model)."""

    def __init__(
        self, vocab_size: int, context: int, d_model: int, n_layer: int, n_head: int, mlp_ratio: int, dropout: float
    ):
        super().__init__()
        self.vocab_size, self.context = vocab_size, context
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_head, mlp_ratio, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"sequence of {t} tokens is longer than the model's context of {self.context}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


class GPTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_layer: int = Field(default=4, ge=1, description="transformer blocks")
    d_model: int = Field(default=256, ge=8, description="width (must be divisible by n_head)")
    n_head: int = Field(default=4, ge=1, description="attention heads")
    mlp_ratio: int = Field(default=4, ge=1, description="MLP hidden width / d_model")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    def model_post_init(self, _: object) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")


class TinyGPTParams(GPTParams):
    """The ``tiny-gpt`` preset: trains meaningfully on 2 CPU cores in about a minute per domain."""

    n_layer: int = Field(default=2, ge=1, description="transformer blocks")
    d_model: int = Field(default=128, ge=8, description="width (must be divisible by n_head)")


def gpt(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    n_layer: int = 4,
    d_model: int = 256,
    n_head: int = 4,
    mlp_ratio: int = 4,
    dropout: float = 0.0,
    task_classes: Sequence[Sequence[int]] | None = None,
) -> nn.Module:
    """Decoder-only transformer over a vocabulary of ``n_classes`` tokens, context ``input_shape[0]``."""
    from perennial.models import Classifier, SingleHead

    if len(input_shape) != 1:
        raise ValueError(
            f"gpt models token windows of shape (T,), got inputs {tuple(input_shape)}; use a text benchmark "
            "(e.g. -b text-domains) or mlp/cnn for classification"
        )
    if task_classes:
        raise ValueError("gpt has one output over the vocabulary; it does not support task-incremental heads")
    body = GPTBody(n_classes, int(input_shape[0]), d_model, n_layer, n_head, mlp_ratio, dropout)
    model = Classifier(body, SingleHead(d_model, n_classes), d_model)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.proj.weight", "out.weight")) else 0.02
            nn.init.normal_(p, 0.0, std)
    return model


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    context: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample ``max_new_tokens`` tokens after ``prompt`` (1-D ids); returns the new ids only.

    ``temperature`` 0 is greedy decoding; ``top_k`` keeps the k most likely tokens. The
    model sees at most the last ``context`` tokens. Sampling uses ``generator`` (seeded by
    the caller) so that a seed gives the same text.
    """
    was_training = model.training
    model.eval()
    idx = prompt.reshape(1, -1)
    out = []
    try:
        for _ in range(max_new_tokens):
            logits = model(idx[:, -context:])[:, -1, :].float()  # (1, V)
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = torch.topk(logits, top_k).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, -1).cpu(), 1, generator=generator).to(idx.device)
            idx = torch.cat([idx, nxt], 1)
            out.append(nxt)
    finally:
        model.train(was_training)
    return torch.cat(out, 1)[0] if out else prompt.new_zeros(0)
