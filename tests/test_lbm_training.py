"""The LBM on real token data: tokenize a prepared dataset (cached), train through the shared core, sample."""

from __future__ import annotations

import pytest
import torch

from neurorvq.lbm import LBMConfig, LBMForCausalLM
from neurorvq.lbm.data import code_loader, load_codes, tokenize_dataset
from neurorvq.lbm.training import train_lbm, validation_nll
from neurorvq.tokenizer import NeuroRVQTokenizer
from neurorvq.tokenizer.data import prepare_dataset
from neurorvq.tokenizer.trainer import TrainingArguments

from .conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

FILES = ["eegmat/Subject02_2.edf", "eegmat/Subject03_2.edf", "eegmmidb/S001/S001R01.edf"]


@pytest.fixture(scope="module")
def tokenizer() -> NeuroRVQTokenizer:
    return NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small").eval()


@pytest.fixture(scope="module")
def codes_dir(eeg_dir, tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("lbm")
    prepare_dataset([eeg_dir / f for f in FILES], root / "prepared", validation_fraction=0.34, progress=False)
    result = tokenize_dataset(root / "prepared", tokenizer, root / "codes")
    assert not result["reused_cache"]
    return root


def tiny_config(tokenizer, layout: str) -> LBMConfig:
    base = LBMConfig.from_json_file(str(REPO_ROOT / "configs" / "lbm" / f"tiny-{layout}.json"))
    keep = ("layout", "hidden_size", "num_layers", "num_heads", "max_positions", "max_patches", "depth_hidden_size",
            "depth_layers", "depth_heads")
    return LBMConfig.from_tokenizer_config(tokenizer.config, **{k: getattr(base, k) for k in keep})


def test_tokenize_matches_the_tokenizer_and_is_cached(codes_dir, tokenizer):
    from neurorvq.tokenizer.data import collate_windows, load_prepared

    again = tokenize_dataset(codes_dir / "prepared", tokenizer, codes_dir / "codes")
    assert again["reused_cache"]
    rows, windows = load_codes(codes_dir / "codes", "train"), load_prepared(codes_dir / "prepared", "train")
    assert len(rows) == len(windows)
    batch = collate_windows([windows[0]])
    encoded = tokenizer.encode(batch["input_values"], batch["channel_names"][0], padding_mask=batch["padding_mask"])
    assert torch.equal(torch.as_tensor(rows[0]["codes"]).long(), encoded.codes[0])
    assert torch.equal(torch.as_tensor(rows[0]["scale_codes"]).long(), encoded.scale_codes[0])


@pytest.mark.parametrize("layout", ["depthwise", "flattened"])
def test_lbm_loss_falls_on_real_codes(codes_dir, tokenizer, layout, tmp_path):
    torch.set_num_threads(1)
    config = tiny_config(tokenizer, layout)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=30, batch_size=4, learning_rate=3e-3, warmup_steps=3,
                             logging_steps=1, eval_steps=30, save_steps=30, progress=False, seed=0)
    validation = load_codes(codes_dir / "codes", "validation")
    before = validation_nll(LBMForCausalLM(config).eval(), validation, max_batches=2)
    model, state = train_lbm(config, codes_dir / "codes", args, eval_batches=2)
    losses = [r["loss"] for r in state.history if "loss" in r]
    # real codes are close to uniform (unigram entropy ~5.97 nats of log(512) = 6.24): learning shows as a
    # steady fall of a tenth of a nat in 30 steps, far above the step-to-step noise (~0.01)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05, losses
    after = validation_nll(model.eval(), validation, max_batches=2)
    assert after["bits_per_code"] < before["bits_per_code"]
    assert LBMForCausalLM.from_pretrained(tmp_path).config.layout == layout


def test_lbm_samples_decode_to_microvolts(codes_dir, tokenizer):
    torch.manual_seed(0)
    model = LBMForCausalLM(tiny_config(tokenizer, "depthwise")).eval()
    names = ["fp1", "fp2", "c3", "c4", "o1", "o2"]
    sample = model.generate(names, num_patches=3, generator=torch.Generator().manual_seed(1))
    eeg = tokenizer.decode(sample["codes"], names, scale_codes=sample["scale_codes"])
    assert eeg.shape == (1, 6, 600) and torch.isfinite(eeg).all()
    batch = next(iter(code_loader(load_codes(codes_dir / "codes", "train"), 2, shuffle=False)))
    assert batch["positions"].shape[-1] == model.config.num_streams


def test_bundled_lbm_loads_offline_and_samples_microvolts(tokenizer, monkeypatch):
    from neurorvq.lbm.modeling_lbm import BUNDLED_MODELS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from neurorvq.lbm import LBMForSpatialGeneration
    from neurorvq.lbm.training import load_lbm

    lbm = load_lbm("neurorvq/lbm-small").eval()
    assert isinstance(lbm, LBMForSpatialGeneration) and lbm.generation_config.num_rounds >= 1  # its saved defaults
    for name in ("neurorvq/lbm-small", "neurorvq/lbm-small-depthwise"):
        size = sum(p.stat().st_size for p in BUNDLED_MODELS[name].glob("*.safetensors"))
        assert size <= 15 * 10**6, (name, size)
    assert lbm.config.tokenizer_name_or_path == "neurorvq/tokenizer-small"
    assert lbm.config.code_layout.stream_vocab_sizes == [256, 256] + [tokenizer.config.codebook_size] * 16
    names = ["fp1", "fp2", "c3", "c4"]
    sample = lbm.generate(names, num_patches=2, generator=torch.Generator().manual_seed(0))
    eeg = tokenizer.decode(sample["codes"], names, scale_codes=sample["scale_codes"])
    assert eeg.shape == (1, 4, 400) and torch.isfinite(eeg).all()
    assert 0.1 < float(eeg.std()) < 1000  # microvolts, not volts and not noise blown up


def test_tiny_lbm_overfits_a_handful_of_real_windows_far_below_unigram(codes_dir, tokenizer):
    """The mechanics learn: full-batch steps on 4 real windows drive their NLL far below their own unigram."""
    import math

    import numpy as np

    from neurorvq.lbm.evaluation import unigram_nll

    from neurorvq.lbm.data import collate_codes

    rows = load_codes(codes_dir / "codes", "train")
    rows = [rows[i] for i in range(len(rows)) if len(rows[i]["channel_indices"]) == 19
            and int(rows[i]["valid_patches"]) == np.asarray(rows[i]["codes"]).shape[-1]][:4]
    assert len(rows) == 4
    sizes = LBMConfig.from_tokenizer_config(tokenizer.config).code_layout.stream_vocab_sizes
    unigram = unigram_nll(rows, rows, sizes)["bits_per_code"]  # fitted on these very windows
    torch.manual_seed(0)
    config = LBMConfig.from_tokenizer_config(tokenizer.config, hidden_size=64, num_layers=2, num_heads=2,
                                             depth_hidden_size=64, depth_layers=1, depth_heads=2, max_positions=304,
                                             max_patches=16)
    model = LBMForCausalLM(config)
    model.init_code_embeddings(tokenizer)
    batch = collate_codes(rows, max_positions=76, max_patches=16, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        loss = model(batch["positions"], batch["channel_ids"], batch["time_ids"], labels=True,
                     position_mask=batch["position_mask"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    bits = float(loss.detach()) / math.log(2)
    assert np.isfinite(bits) and bits < 0.5 * unigram, (bits, unigram)
