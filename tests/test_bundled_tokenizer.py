"""The bundled tokenizer loads offline by name and reconstructs held-out real EEG."""

from __future__ import annotations

import torch

from neurorvq.tokenizer import NeuroRVQFeatureExtractor, NeuroRVQTokenizer
from neurorvq.tokenizer.evaluation import pearson_correlation, zscored_mse
from neurorvq.tokenizer.modeling_neurorvq import BUNDLED_MODELS

# a validation subject of the bundled model's split (see its model card): never seen in training
HELD_OUT = "eegmat/Subject00_1.edf"


def reconstruction_errors(model: NeuroRVQTokenizer, features) -> tuple[float, float]:
    x, names = features["input_values"], features["channel_names"]
    encoded = model.encode(x, names, padding_mask=features["padding_mask"])
    decoded = model.decode(encoded.codes, names, log_amplitude_mean=encoded.log_amplitude_mean,
                           log_amplitude_std=encoded.log_amplitude_std, scale_codes=encoded.scale_codes)
    mses = [zscored_mse(a.numpy(), b.numpy()) for a, b in zip(x, decoded)]
    pccs = [pearson_correlation(a.numpy(), b.numpy()) for a, b in zip(x, decoded)]
    return sum(mses) / len(mses), sum(pccs) / len(pccs)


def test_bundled_tokenizer_loads_offline_and_beats_chance_and_its_untrained_self(eeg_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small").eval()
    assert model.config.amplitude_side_information == "scale_tokens"
    size = sum(p.stat().st_size for p in BUNDLED_MODELS["neurorvq/tokenizer-small"].glob("*.safetensors"))
    assert size <= 15 * 2**20
    by_path = NeuroRVQTokenizer.from_pretrained(BUNDLED_MODELS["neurorvq/tokenizer-small"])
    features = NeuroRVQFeatureExtractor()(eeg_dir / HELD_OUT, return_tensors="pt")
    features = {"input_values": features["input_values"][:6], "padding_mask": features["padding_mask"][:6],
                "channel_names": features["channel_names"]}
    assert torch.equal(model.encode(features["input_values"], features["channel_names"]).codes,
                       by_path.encode(features["input_values"], features["channel_names"]).codes)

    trained_mse, trained_pcc = reconstruction_errors(model, features)
    torch.manual_seed(0)
    untrained = NeuroRVQTokenizer(model.config).train()
    untrained(features["input_values"], features["channel_names"])  # k-means codebooks on this very data
    untrained_mse, untrained_pcc = reconstruction_errors(untrained.eval(), features)
    # chance: an unrelated signal scores z-MSE ~2 and PCC ~0
    assert trained_mse < 1.0 and trained_pcc > 0.3, (trained_mse, trained_pcc)
    assert trained_mse < 0.75 * untrained_mse, (trained_mse, untrained_mse)
    assert trained_pcc > untrained_pcc + 0.2
