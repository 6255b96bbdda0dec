"""NeuroRVQTokenizer: parity with the released model, the EEG v1 preset, save/load, shapes, bad input, learning."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer, convert_official_checkpoint, load_official
from neurorvq.tokenizer.convert_official import convert_official_key
from neurorvq.tokenizer.data import synthetic_eeg

from .conftest import REPO_ROOT, SHARED_DIR, shared_path

TINY = REPO_ROOT / "configs" / "tokenizer" / "tiny.json"
OFFICIAL = REPO_ROOT / "configs" / "tokenizer" / "official-eeg-v1.json"
CHANNELS = ["fp1", "fz", "c3", "cz", "c4", "pz", "o1", "o2"]


def tiny_model(seed: int = 0, **overrides) -> NeuroRVQTokenizer:
    torch.manual_seed(seed)
    config = NeuroRVQConfig.from_json_file(str(TINY))
    for key, value in overrides.items():
        setattr(config, key, value)
    config.validate()
    return NeuroRVQTokenizer(config)


@pytest.fixture(scope="module")
def trained_tiny() -> NeuroRVQTokenizer:
    """A tiny model after one training step (so codebooks are initialised), in eval mode."""
    model = tiny_model()
    model.train()
    model(synthetic_eeg(4, 8, 4), CHANNELS)
    return model.eval()


# ---- parity with the released code ------------------------------------------------------------------


@pytest.fixture(scope="module")
def parity(parity_dir):
    meta = json.loads((parity_dir / "meta.json").read_text())
    expected = load_file(str(parity_dir / "expected.safetensors"))
    model = load_official(parity_dir / "official_state_dict.safetensors")
    return model, meta, expected


def test_parity_codes_exact(parity):
    model, meta, expected = parity
    encoded = model.encode(expected["input_microvolts"], meta["channel_names"])
    # ours [B, S, K, C, A] -> released [S, K, B, C * A]
    codes = encoded.codes.permute(1, 2, 0, 3, 4).reshape(expected["codes"].shape)
    assert codes.shape == (4, 8, meta["batch"], len(meta["channel_names"]) * meta["n_patches_per_channel"])
    assert torch.equal(codes, expected["codes"]), f"{(codes != expected['codes']).sum()} codes differ"


def test_parity_reconstruction(parity):
    model, meta, expected = parity
    x, names = expected["input_microvolts"], meta["channel_names"]
    with torch.no_grad():
        output = model(x, names)
    b, n = expected["zscored_input"].shape[:2]
    assert (output.zscored_input.reshape(b, n, -1) - expected["zscored_input"]).abs().max() < 1e-5
    assert (output.zscored_reconstruction.reshape(b, n, -1) - expected["zscored_reconstruction"]).abs().max() < 1e-4
    for ours, theirs in [("log_amplitude", "decoder_log_amplitude"), ("phase_sin", "decoder_sin"), ("phase_cos", "decoder_cos")]:
        assert (output.spectrum[ours].reshape(b, n, -1) - expected[theirs]).abs().max() < 1e-4, ours
    # decoding from codes alone (+ the window statistics) gives the same signal as the forward pass
    encoded = model.encode(x, names)
    decoded = model.decode(encoded.codes, names, encoded.log_amplitude_mean, encoded.log_amplitude_std)
    assert (decoded - output.reconstruction).abs().max() < 1e-3 * output.reconstruction.abs().max()


def test_convert_official_folder_loads_with_from_pretrained(parity, parity_dir, tmp_path):
    model, meta, expected = parity
    folder = convert_official_checkpoint(parity_dir / "official_state_dict.safetensors", tmp_path / "converted")
    assert (folder / "model.safetensors").is_file()
    loaded = AutoModel.from_pretrained(folder)
    assert isinstance(loaded, NeuroRVQTokenizer)
    assert (loaded.config.encoder_layers, loaded.config.decoder_layers) == (2, 1)
    assert (loaded.config.codebook_size, loaded.config.code_dim, loaded.config.num_quantizers) == (64, 16, 8)
    codes = loaded.encode(expected["input_microvolts"], meta["channel_names"]).codes
    assert torch.equal(codes.permute(1, 2, 0, 3, 4).reshape(expected["codes"].shape), expected["codes"])


def test_convert_reads_torch_pt_with_weights_only(parity_dir, tmp_path):
    state_dict = load_file(str(parity_dir / "official_state_dict.safetensors"))
    torch.save({"model": state_dict}, tmp_path / "checkpoint.pt")
    model = load_official(tmp_path / "checkpoint.pt")
    assert model.config.code_dim == 16


def test_convert_rejects_foreign_checkpoint(tmp_path):
    torch.save({"something.weight": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a NeuroRVQ tokenizer checkpoint"):
        load_official(tmp_path / "foreign.pt")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_official(tmp_path / "garbage.safetensors")


# ---- the released EEG v1 preset ---------------------------------------------------------------------


def test_official_preset_parameter_count_and_keys():
    keys = shared_path(SHARED_DIR / "fixtures" / "official_eeg_v1_tokenizer_keys.json", "the released key list")
    released = json.loads(keys.read_text())
    config = NeuroRVQConfig.from_json_file(str(OFFICIAL))
    with torch.device("meta"):
        model = NeuroRVQTokenizer(config)
    state = model.state_dict()
    assert sum(t.numel() for t in state.values()) == released["n_params"] == 75_988_624
    converted = {convert_official_key(k): shape for k, shape in released["keys"].items()}
    assert len(converted) == len(released["keys"]) == len(state) == 505  # one-to-one
    assert set(converted) == set(state)
    for key, shape in converted.items():
        assert math.prod(shape) == state[key].numel(), key
        assert [d for d in shape if d != 1] == [d for d in state[key].shape if d != 1], key


# ---- save / load, shapes, fewer stages ------------------------------------------------------------


def test_save_load_and_automodel_give_identical_codes(trained_tiny, tmp_path):
    x = synthetic_eeg(2, 8, 4, seed=1)
    codes = trained_tiny.encode(x, CHANNELS).codes
    trained_tiny.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "neurorvq"
    for loaded in (NeuroRVQTokenizer.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert torch.equal(loaded.encode(x, CHANNELS).codes, codes)
        assert bool(loaded.quantizers[0].stages[0].initialized.item())


def test_encode_decode_shapes_and_fewer_stages(trained_tiny):
    config = trained_tiny.config
    x = synthetic_eeg(3, 8, 5, seed=2)
    encoded = trained_tiny.encode(x, CHANNELS)
    assert encoded.codes.shape == (3, config.num_scales, config.num_quantizers, 8, 5)
    assert encoded.codes.dtype == torch.long
    assert int(encoded.codes.min()) >= 0 and int(encoded.codes.max()) < config.codebook_size
    assert encoded.log_amplitude_mean.shape == encoded.log_amplitude_std.shape == (3,)
    full = trained_tiny.decode(encoded.codes, CHANNELS, encoded.log_amplitude_mean, encoded.log_amplitude_std)
    assert full.shape == x.shape and torch.isfinite(full).all()
    for k in range(1, config.num_quantizers):
        coarse = trained_tiny.decode(encoded.codes[:, :, :k], CHANNELS, encoded.log_amplitude_mean,
                                     encoded.log_amplitude_std)
        assert coarse.shape == x.shape and torch.isfinite(coarse).all()
        # encoding with the first k stages gives exactly the first k stages' codes
        assert torch.equal(trained_tiny.encode(x, CHANNELS, num_quantizers=k).codes, encoded.codes[:, :, :k])
    assert not torch.equal(coarse, full)


def test_per_sample_channel_names(trained_tiny):
    x = synthetic_eeg(2, 8, 2, seed=3)
    shared = trained_tiny.encode(x, CHANNELS).codes
    per_sample = trained_tiny.encode(x, [CHANNELS, CHANNELS]).codes
    assert torch.equal(shared, per_sample)
    swapped = trained_tiny.encode(x, [CHANNELS, CHANNELS[::-1]]).codes
    assert torch.equal(swapped[0], shared[0]) and not torch.equal(swapped[1], shared[1])


def test_padding_content_does_not_leak_into_codes(trained_tiny):
    x = synthetic_eeg(1, 8, 4, seed=4)
    mask = torch.ones_like(x, dtype=torch.long)
    mask[:, :, 600:] = 0  # last patch of every channel is padding
    zeros, noise = x.clone(), x.clone()
    zeros[:, :, 600:] = 0
    noise[:, :, 600:] = torch.randn(1, 8, 200) * 300
    a = trained_tiny.encode(zeros, CHANNELS, padding_mask=mask)
    b = trained_tiny.encode(noise, CHANNELS, padding_mask=mask)
    assert torch.equal(a.codes[..., :3], b.codes[..., :3])
    assert torch.allclose(a.log_amplitude_mean, b.log_amplitude_mean)
    assert a.patch_mask[..., 3].logical_not().all() and a.patch_mask[..., :3].all()


@pytest.mark.parametrize("sequences_per_pass", [1, 2, 3])
def test_encoder_passes_over_sequence_groups_equal_one_pass(trained_tiny, sequences_per_pass):
    """The blocks run on groups of the [S * B] sequences (all scales stacked): any grouping gives what one
    pass over the whole stack gives, bitwise (every row is computed on its own)."""
    x = synthetic_eeg(2, 8, 4, seed=5)
    indices = trained_tiny.channel_indices(CHANNELS, 2, 8)
    transformer = trained_tiny.encoder.transformer
    transformer.sequences_per_pass = 2 * trained_tiny.config.num_scales  # all S x B sequences at once
    try:
        whole = trained_tiny.encoder(x, indices, None)
        transformer.sequences_per_pass = sequences_per_pass
        grouped = trained_tiny.encoder(x, indices, None)
    finally:
        transformer.sequences_per_pass = None
    assert torch.equal(grouped, whole)


# ---- training ----------------------------------------------------------------------------------------


def test_first_training_batch_initialises_codebooks_by_kmeans():
    model = tiny_model(seed=1).train()
    assert not any(bool(s.initialized.item()) for q in model.quantizers for s in q.stages)
    output = model(synthetic_eeg(4, 8, 4), CHANNELS)
    for quantizer in model.quantizers:
        for stage in quantizer.stages:
            assert bool(stage.initialized.item())
            # official codebooks are unit vectors
            assert torch.allclose(stage.codebook.norm(dim=-1), torch.ones(stage.codebook_size), atol=1e-4)
    assert output.codebook_usage.shape == output.codebook_perplexity.shape == (4, model.config.num_quantizers)
    assert (output.codebook_perplexity >= 1).all()
    total = (output.quantizer_loss + output.amplitude_loss + output.phase_loss + output.time_loss)
    assert torch.allclose(output.loss, total)


def test_loss_falls_on_real_eeg(eeg_dir):
    from neurorvq.tokenizer.feature_extraction_neurorvq import NeuroRVQFeatureExtractor

    features = NeuroRVQFeatureExtractor(window_patches=4)(eeg_dir / "eegmat" / "Subject00_1.edf", return_tensors="pt")
    x, names = features["input_values"][:32], features["channel_names"]
    assert x.shape[1:] == (19, 800)
    model = tiny_model(seed=0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        batch = x[(step * 8) % 32:(step * 8) % 32 + 8]
        output = model(batch, names)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("relative_path,num_channels,source_rate", [
    ("eegmmidb/S001/S001R01.edf", 64, 160.0),     # EDF, names like "Fc5."
    ("eegmat/Subject01_2.edf", 19, 500.0),        # EDF at 500 Hz
    ("eeglab_sample/eeglab_data.set", None, 128.0),  # EEGLAB
])
def test_real_eeg_through_feature_extractor_and_tokenizer(eeg_dir, trained_tiny, relative_path, num_channels, source_rate):
    import mne

    from neurorvq.tokenizer.feature_extraction_neurorvq import NeuroRVQFeatureExtractor

    raw = mne.io.read_raw(eeg_dir / relative_path, preload=False, verbose="error")
    assert raw.info["sfreq"] == source_rate
    features = NeuroRVQFeatureExtractor(on_unknown_channel="drop")(eeg_dir / relative_path, return_tensors="pt")
    x, mask, names = features["input_values"][:4], features["padding_mask"][:4], features["channel_names"]
    if num_channels is not None:
        assert x.shape[1] == num_channels
    encoded = trained_tiny.encode(x, names, padding_mask=mask)
    channels, patches = x.shape[1], x.shape[2] // 200
    assert channels * patches <= 256
    assert encoded.codes.shape == (x.shape[0], 4, trained_tiny.config.num_quantizers, channels, patches)
    decoded = trained_tiny.decode(encoded.codes, names, encoded.log_amplitude_mean, encoded.log_amplitude_std)
    assert decoded.shape == x.shape and torch.isfinite(decoded).all()


# ---- config and input validation ------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("codebook_size", 0), ("num_quantizers", -1), ("quantizer_type", "fancy"), ("ema_decay", 1.5),
    ("hidden_size", 128), ("num_attention_heads", 7), ("conv_kernel_sizes", [[4, 3]] * 4), ("patch_size", 190),
])
def test_config_rejects_invalid_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        NeuroRVQConfig(**{field: value})


@pytest.mark.parametrize("case,message", [
    ("nan", "NaN or Inf"), ("inf", "NaN or Inf"), ("rank", r"\[B, C, T\]"), ("short", "too short"),
    ("not_multiple", "multiple of the patch size"), ("too_many_tokens", "too many tokens"),
    ("unknown_channel", "unknown channel"), ("channel_count", "channel_names has"), ("integer", "floating point"),
])
def test_bad_input_raises_clear_value_error(trained_tiny, case, message):
    x, names = synthetic_eeg(1, 8, 2), list(CHANNELS)
    if case == "nan":
        x[0, 3, 10] = float("nan")
    elif case == "inf":
        x[0, 0, 0] = float("inf")
    elif case == "rank":
        x = x[0]
    elif case == "short":
        x = x[..., :150]
    elif case == "not_multiple":
        x = x[..., :350]
    elif case == "too_many_tokens":
        x = synthetic_eeg(1, 8, 33)  # 8 x 33 = 264 > 256
    elif case == "unknown_channel":
        names[2] = "xyz"
    elif case == "channel_count":
        names = names[:5]
    elif case == "integer":
        x = x.long()
    with pytest.raises(ValueError, match=message):
        trained_tiny.encode(x, names)
    with pytest.raises(ValueError, match=message):
        trained_tiny(x, names)


def test_bad_codes_raise(trained_tiny):
    codes = trained_tiny.encode(synthetic_eeg(1, 8, 2), CHANNELS).codes
    stats = dict(log_amplitude_mean=torch.zeros(1), log_amplitude_std=torch.ones(1))
    with pytest.raises(ValueError, match="codes must lie in"):
        trained_tiny.decode(codes + trained_tiny.config.codebook_size, CHANNELS, **stats)
    with pytest.raises(ValueError, match="scales"):
        trained_tiny.decode(codes[:, :2], CHANNELS, **stats)
    with pytest.raises(ValueError, match=r"\[B, S, K, C, A\]"):
        trained_tiny.decode(codes[0], CHANNELS, **stats)
    with pytest.raises(ValueError, match="log_amplitude_mean"):
        trained_tiny.decode(codes, CHANNELS, None, None)


def test_normalize_phase_keeps_direction_and_restores_amplitude(trained_tiny):
    x = synthetic_eeg(1, 8, 3, seed=6)
    encoded = trained_tiny.encode(x, CHANNELS)
    stats = dict(log_amplitude_mean=encoded.log_amplitude_mean, log_amplitude_std=encoded.log_amplitude_std)
    plain = trained_tiny.decode(encoded.codes, CHANNELS, **stats)
    unit = trained_tiny.decode(encoded.codes, CHANNELS, **stats, normalize_phase=True)
    assert unit.std() > plain.std()  # shrunken (uncertain) phase predictions no longer shrink the amplitude
