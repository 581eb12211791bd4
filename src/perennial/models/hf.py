"""``hf:PATH_OR_ID``: Hugging Face causal language models for continual pre-training.

- ``hf:DIR`` or ``hf:ORG/NAME``: ``AutoModelForCausalLM.from_pretrained`` (a local directory,
  or the hub when online); ``model.random_init=true`` keeps its configuration but starts from
  random weights.
- ``hf:tiny-gpt2`` and ``hf:tiny-llama``: random-init models from small built-in configs (no
  download; for tests and CPU runs); ``model.config`` overrides their fields (and any
  model's, e.g. ``{"n_layer": 4}``).

The model becomes a :class:`~perennial.models.Classifier`: ``body`` is the transformer
without its language-model head (token ids (B, T) -> final hidden states (B, T, d)), ``head``
is the output projection (-> logits (B, T, V)), so the loop, strategies, timescales and
checkpoints treat it like the built-in ``gpt``. The full Hugging Face model object shares
those modules and is kept on the side for :func:`save_pretrained` (safetensors, loadable by
``AutoModelForCausalLM.from_pretrained``).

Tokenizer (:func:`tokenizer_spec`): the model directory's own tokenizer when it has one
(``tokenizer.json`` / ``tokenizer_config.json``); otherwise the byte-level tokenizer when the
vocabulary has at least 256 entries; otherwise an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from perennial.errors import ConfigError

#: small configurations for random-init models (CPU-sized)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-gpt2": {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64},
    "tiny-llama": {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "hidden_size": 64,
        "intermediate_size": 128,
    },
}


class HFParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    random_init: bool = Field(default=False, description="hf: the model's configuration with random weights")
    config: dict[str, Any] = Field(default_factory=dict, description="hf: configuration fields to override")


def transformers_module() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            [("model.name", "hf:NAME needs the package 'transformers'; install it with: pip install 'perennial[hf]'")]
        ) from None
    return transformers


class HFBody(nn.Module):
    """Token ids (B, T) -> the transformer's final hidden states (B, T, d)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x: Tensor) -> Tensor:
        return self.base(input_ids=x).last_hidden_state


class HFHead(nn.Module):
    def __init__(self, lm_head: nn.Module):
        super().__init__()
        self.lm_head = lm_head

    def forward(self, h: Tensor, t: Tensor | None = None) -> Tensor:
        return self.lm_head(h)


def load_causal_lm(
    name: str, *, n_classes: int | None = None, random_init: bool = False, config: dict | None = None
) -> Any:
    """The Hugging Face model for ``hf:NAME`` (see the module docstring)."""
    tf = transformers_module()
    overrides = dict(config or {})
    if name in PRESETS:
        fields = {**PRESETS[name], **overrides}
        kind = fields.pop("model_type")
        fields.setdefault("vocab_size", n_classes or 256)
        if kind == "gpt2":
            fields.setdefault("n_positions", 1024)
        cfg = tf.AutoConfig.for_model(kind, **fields)
        return tf.AutoModelForCausalLM.from_config(cfg)
    try:
        if random_init or overrides:
            cfg = tf.AutoConfig.from_pretrained(name, **overrides)
            if random_init:
                return tf.AutoModelForCausalLM.from_config(cfg)
            return tf.AutoModelForCausalLM.from_pretrained(name, config=cfg)
        return tf.AutoModelForCausalLM.from_pretrained(name)
    except (OSError, ValueError, KeyError) as e:
        where = "the local directory" if Path(name).exists() else "a hub id (needs network) or a local directory"
        raise ValueError(
            f"cannot load Hugging Face model {name!r} as {where}: {str(e).splitlines()[0]}; "
            f"or use a random-init preset: {', '.join(f'hf:{p}' for p in PRESETS)}"
        ) from None


def hf_causal_lm(
    name: str,
    input_shape: Sequence[int],
    n_classes: int,
    *,
    random_init: bool = False,
    config: dict[str, Any] | None = None,
    task_classes: Sequence[Sequence[int]] | None = None,
) -> nn.Module:
    from perennial.models import Classifier

    if len(input_shape) != 1:
        raise ValueError(f"hf:{name} is a language model; it needs token windows (T,), got inputs {tuple(input_shape)}")
    full = load_causal_lm(name, n_classes=n_classes, random_init=random_init, config=config)
    vocab = int(full.get_output_embeddings().weight.shape[0])
    if vocab < n_classes:
        raise ValueError(
            f"hf:{name} has a vocabulary of {vocab} tokens but the stream's tokenizer has {n_classes}; "
            "use the model's own tokenizer (benchmark.tokenizer=hf:PATH) or a model with a larger vocabulary"
        )
    limit = getattr(full.config, "n_positions", None) or getattr(full.config, "max_position_embeddings", None)
    if limit is not None and int(input_shape[0]) > int(limit):
        raise ValueError(f"hf:{name} takes at most {limit} positions; set benchmark.context <= {limit}")
    width = int(full.get_output_embeddings().weight.shape[1])
    model = Classifier(HFBody(full.base_model), HFHead(full.get_output_embeddings()), width)
    object.__setattr__(model, "hf_model", full)  # shares every module; not registered (no duplicate names)
    return model


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write a model built from ``hf:...`` as safetensors + config (``from_pretrained`` loads it)."""
    full = getattr(model, "hf_model", None)
    if full is None:
        raise ValueError("only models built from hf:NAME can be saved in the Hugging Face format")
    directory = Path(directory)
    full.save_pretrained(directory, safe_serialization=True)
    return directory


def tokenizer_spec(name: str) -> str:
    """The tokenizer of ``hf:NAME``: ``hf:PATH`` (its own), or ``byte`` when it has none and >= 256 tokens."""
    if name in PRESETS:
        return "byte"
    p = Path(name).expanduser()
    if p.is_dir():
        if (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file():
            return f"hf:{p}"
        tf = transformers_module()
        try:
            vocab = int(tf.AutoConfig.from_pretrained(str(p)).vocab_size)
        except (OSError, ValueError) as e:
            raise ConfigError([("model.name", f"{p} is not a Hugging Face model directory: {e}")]) from None
        if vocab < 256:
            raise ConfigError(
                [
                    (
                        "model.name",
                        f"{p} has no tokenizer and a vocabulary of {vocab} (< 256) tokens, too small for the byte-level "
                        "tokenizer; add the model's tokenizer files to the directory",
                    )
                ]
            )
        return "byte"
    return f"hf:{name}"  # a hub id: its tokenizer comes from the hub
