"""Hugging Face causal LMs (hf:NAME): random-init presets through fit, tokenizers, and the
safetensors round trip to ``AutoModelForCausalLM.from_pretrained``."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_text_stream
from perennial import api
from perennial.config import build_config
from perennial.errors import ConfigError
from perennial.models import MODELS, build_model
from perennial.models.hf import save_pretrained, tokenizer_spec
from perennial.store import RunStore
from perennial.strategies import STRATEGIES
from perennial.train import TrainSettings, fit

transformers = pytest.importorskip("transformers")


def test_hf_names_are_language_models_in_the_registry():
    assert "hf:tiny-gpt2" in MODELS and MODELS.get("hf:some/model").kind == "lm"
    with pytest.raises(ConfigError, match="hf:tiny-gpt2 is a language-modelling model"):
        build_config(strategy="naive", overrides={"model": {"name": "hf:tiny-gpt2"}})  # on split-mnist


@pytest.mark.parametrize("preset", ["tiny-gpt2", pytest.param("tiny-llama", marks=pytest.mark.slow)])
def test_random_init_preset_trains_with_replay_and_round_trips(preset, tmp_path):
    stream = tiny_text_stream(context=16)
    torch.manual_seed(0)
    model = build_model(f"hf:{preset}", stream.input_shape, stream.n_classes, config={"vocab_size": 256})
    settings = TrainSettings(steps=25, batch_size=8, lr=3e-3, optimizer="adamw")
    r = fit(model, stream, STRATEGIES.get("replay")(buffer_size=32), settings)
    assert r.loss_matrix[0][0] < r.random_init_loss[0] - 0.5  # it learned the first domain's letters
    save_pretrained(model, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    model.eval()
    x = stream[0].test.x[:2]
    with torch.no_grad():
        assert torch.allclose(back(input_ids=x).logits, model(x), atol=1e-5)


def test_run_in_store_writes_the_hf_format_and_model_dirs_resolve_their_tokenizer(tmp_path):
    cfg = build_config(
        benchmark="text-domains",
        strategy="replay",
        overrides=[
            "model.name=hf:tiny-gpt2",
            "train.steps=3",
            "train.batch_size=4",
            "benchmark.context=16",
            "benchmark.max_bytes=4000",
            "benchmark.val_bytes=600",
            "strategy.buffer_size=8",
        ],
    )
    store = RunStore(tmp_path / "s")
    rec = api.run(cfg, store=store, run_id="hf-run")
    hf_dir = store.model_path("hf-run").with_suffix(".hf")
    assert rec.status == "finished" and (hf_dir / "model.safetensors").is_file()
    assert tokenizer_spec(str(hf_dir)) == "byte"  # no tokenizer files, 256 tokens
    again = build_config(benchmark="text-domains", overrides=[f"model.name=hf:{hf_dir}", "benchmark.context=16"])
    stream = api.build_stream(again)
    assert stream.meta["tokenizer"] == "byte"
    small = tmp_path / "small"
    transformers.AutoModelForCausalLM.from_config(
        transformers.GPT2Config(vocab_size=100, n_layer=1, n_head=1, n_embd=8)
    ).save_pretrained(small)
    with pytest.raises(ConfigError, match="too small for the byte-level tokenizer"):
        tokenizer_spec(str(small))


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load Hugging Face model"):
        build_model(f"hf:{tmp_path / 'nothing'}", (16,), 256)
