"""The bundled tokenizer loads offline by name and reconstructs held-out real EEG: close, at real amplitude, without
seams at the one-second patch edges (the model card's validation figures, on one held-out recording)."""

from __future__ import annotations

import numpy as np
import torch

from neurorvq.tokenizer import NeuroRVQFeatureExtractor, NeuroRVQTokenizer
from neurorvq.tokenizer.metrics import amplitude_ratio, band_nmse, seam_ratio, zscored_mse
from neurorvq.tokenizer.modeling_neurorvq import BUNDLED_MODELS

# a validation subject of the bundled model's split (see its model card): never seen in training
HELD_OUT = "eegmat/Subject00_1.edf"


def test_bundled_tokenizer_reconstructs_held_out_eeg(eeg_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small").eval()
    assert model.config.token_design == "mdct" and model.config.bits_per_channel_second() <= 160
    size = sum(p.stat().st_size for p in BUNDLED_MODELS["neurorvq/tokenizer-small"].glob("*.safetensors"))
    assert size <= 15 * 2**20
    by_path = NeuroRVQTokenizer.from_pretrained(BUNDLED_MODELS["neurorvq/tokenizer-small"]).eval()
    features = NeuroRVQFeatureExtractor()(eeg_dir / HELD_OUT, return_tensors="pt")
    x, names, mask = features["input_values"][:4], features["channel_names"], features["padding_mask"][:4]
    encoded = model.encode(x, names, padding_mask=mask)
    assert torch.equal(encoded.codes, by_path.encode(x, names, padding_mask=mask).codes)

    decoded = model.decode(encoded.codes, names, scale_codes=encoded.scale_codes)  # the default decode
    coarse = model.decode(encoded.codes[:, :, :1], names, scale_codes=encoded.scale_codes)
    seams = []
    for original, reconstruction, first_stage, valid in zip(x.numpy(), decoded.numpy(), coarse.numpy(),
                                                            mask[:, 0].sum(-1).tolist()):
        mse = zscored_mse(original, reconstruction, valid)
        assert mse < 0.15, mse  # an unrelated signal scores ~2; the DCT codec at 160 bits ~0.03
        assert mse < zscored_mse(original, first_stage, valid)
        assert 0.8 < amplitude_ratio(original, reconstruction, valid) < 1.25
        seams.append(seam_ratio(reconstruction, 200, valid))
        bands = band_nmse(original, reconstruction, valid)
        assert bands["beta"] < 0.6 and bands["gamma"] < 0.9 and np.isfinite(list(bands.values())).all(), bands
    # median over windows (one window's estimate varies): real EEG ~0.75-1.25; 1-s blocks score 50 and more
    assert np.median(seams) < 1.5, seams
