"""The mdct token design: the lapped transform, k-means codebooks, the refiner, and decoding real EEG of unseen
subjects with real amplitude and without seams (a tiny config fitted on a few real recordings)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer
from neurorvq.tokenizer.data import load_prepared, prepare_dataset
from neurorvq.tokenizer.metrics import amplitude_ratio, seam_ratio, zscored_mse
from neurorvq.tokenizer.trainer import TrainingArguments
from neurorvq.tokenizer.training import train_tokenizer
from neurorvq.tokenizer.transform import LappedTransform

from .conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

TINY_MDCT = REPO_ROOT / "configs" / "tokenizer" / "tiny-mdct.json"
FILES = ["eegmat/Subject02_1.edf", "eegmat/Subject03_1.edf", "eegmat/Subject04_1.edf", "eegmat/Subject05_1.edf"]


@pytest.mark.parametrize("num_patches", [1, 2, 5])
def test_lapped_transform_is_orthogonal_and_exact(num_patches):
    transform = LappedTransform(200)
    x = torch.randn(3, 4, num_patches * 200, dtype=torch.float64).float()
    coefficients = transform(x)
    assert coefficients.shape == (3, 4, num_patches, 200)
    assert torch.allclose(transform.inverse(coefficients), x, atol=1e-4)
    # orthogonal: energy is kept, so squared errors on coefficients are squared errors in time
    assert float((coefficients ** 2).sum() / (x ** 2).sum()) == pytest.approx(1.0, abs=1e-5)
    error = torch.randn_like(coefficients)
    assert float((transform.inverse(error) ** 2).sum() / (error ** 2).sum()) == pytest.approx(1.0, abs=1e-5)


def test_lapped_transform_puts_a_sine_in_its_frequency_bin():
    transform = LappedTransform(200)
    t = torch.arange(1000) / 200
    coefficients = transform(torch.sin(2 * np.pi * 10.25 * t)[None])[0, 2]  # an interior frame
    # coefficient k sits at (k + 1/2) * 0.5 Hz: 10.25 Hz is k = 20
    assert int(coefficients.abs().argmax()) in (19, 20, 21)


@pytest.fixture(scope="module")
def prepared(eeg_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("prepared-mdct")
    prepare_dataset([eeg_dir / f for f in FILES], output, validation_fraction=0.25, progress=False)
    return output


@pytest.fixture(scope="module")
def fitted(prepared, tmp_path_factory):
    """Codebooks by k-means, then 30 refiner steps; returns (model folder, the training state)."""
    output = tmp_path_factory.mktemp("mdct-model")
    config = NeuroRVQConfig.from_json_file(str(TINY_MDCT))
    args = TrainingArguments(output_dir=str(output), max_steps=30, batch_size=4, learning_rate=3e-3, warmup_steps=1,
                             save_steps=30, eval_steps=30, logging_steps=1, progress=False, kmeans_vectors=5000)
    _, state = train_tokenizer(config, prepared, args)
    return output, state


def test_codebooks_are_fitted_by_kmeans_and_each_stage_helps(fitted):
    output, _ = fitted
    errors = json.loads((output / "codebook_fit.json").read_text())["residual_mse_per_band_and_stage"]
    assert len(errors) == 3 and all(len(band) == 2 for band in errors)
    for band in errors:
        assert band[1] < band[0]  # the second residual stage removes error the first left


def test_refiner_training_lowers_the_time_loss(fitted, prepared):
    from neurorvq.tokenizer.data import collate_windows

    output, state = fitted
    assert len([r for r in state.history if "time_loss" in r]) == 30
    model = NeuroRVQTokenizer.from_pretrained(output).eval()
    train = load_prepared(prepared, "train")
    batch = collate_windows([train[i] for i in range(len(train)) if len(train[i]["channel_names"]) == 19])
    with torch.no_grad():
        refined = float(model(batch["input_values"], batch["channel_names"], batch["padding_mask"]).time_loss)
        model.refiner = None  # the codebooks alone
        plain = float(model(batch["input_values"], batch["channel_names"], batch["padding_mask"]).time_loss)
    assert refined < plain


def test_unseen_subject_decodes_with_real_amplitude_and_no_seams(fitted, prepared):
    output, _ = fitted
    model = NeuroRVQTokenizer.from_pretrained(output).eval()
    validation = load_prepared(prepared, "validation")
    assert len(validation)
    for row in validation:
        x = torch.as_tensor(np.asarray(row["input_values"], dtype=np.float32))[None]
        names = list(row["channel_names"])
        encoded = model.encode(x, names)
        assert encoded.codes.shape == (1, 3, 2, x.shape[1], x.shape[2] // 200)
        assert encoded.scale_codes.shape == (1, 2, x.shape[1], x.shape[2] // 200)
        y = model.decode(encoded.codes, names, scale_codes=encoded.scale_codes)  # codes alone -> µV
        real, fake = x[0].numpy(), y[0].numpy()
        valid = int(row["valid_samples"])
        # a codeword is the mean of its cell, so coarse (16-code) codebooks shrink by about the error they leave:
        # std ratio ~ sqrt(1 - z-MSE); the bundled model is held to 0.8-1.25 (test_bundled_tokenizer)
        full = zscored_mse(real, fake, valid)
        assert np.sqrt(1 - full) - 0.15 < amplitude_ratio(real, fake, valid) < 1.25
        # frames overlap, so nothing breaks at patch edges; coarse codes leave some time-domain aliasing, folded
        # at the patch edges (blocky 1-s decoders score 50 and more; the bundled model is held to 1.5)
        assert seam_ratio(fake, 200, valid) < 2.5
        coarse = model.decode(encoded.codes[:, :, :1], names, scale_codes=encoded.scale_codes)[0].numpy()
        assert full < zscored_mse(real, coarse, valid) < 2.0  # one stage decodes, coarser
        assert full < 0.8  # 16-code tiny codebooks: far from perfect, far from unrelated (2.0)


def random_codebook_model() -> NeuroRVQTokenizer:
    """The tiny mdct config with random (normal) codebooks and an untrained refiner, seeded."""
    torch.manual_seed(0)
    model = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(TINY_MDCT))).eval()
    for quantizer in model.quantizers:
        for stage in quantizer.stages:
            stage.codebook.normal_()
    return model


def test_encode_and_forward_give_the_same_codes_and_an_untrained_refiner_changes_nothing():
    model = random_codebook_model()
    x, names = 20 * torch.randn(2, 3, 600), ["c3", "cz", "c4"]
    encoded = model.encode(x, names)
    assert torch.equal(model(x, names).codes, encoded.codes)
    refined = model.decode(encoded.codes, names, scale_codes=encoded.scale_codes)
    model.refiner = None
    plain = model.decode(encoded.codes, names, scale_codes=encoded.scale_codes)
    assert torch.equal(refined, plain)


def test_mdct_decode_needs_the_scale_codes():
    model = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(TINY_MDCT))).eval()
    codes = torch.zeros(1, 3, 2, 2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="scale_codes"):
        model.decode(codes, ["c3", "c4"])


def test_designs_say_what_callers_need_and_keep_their_weight_names():
    released = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(REPO_ROOT / "configs/tokenizer/tiny.json")))
    mdct = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(TINY_MDCT)))
    assert (released.encodes_whole_recordings, released.decodes_whole_recordings, released.max_window_tokens,
            released.supports_noise_filling) == (False, False, 256, False)
    assert (mdct.encodes_whole_recordings, mdct.decodes_whole_recordings, mdct.max_window_tokens,
            mdct.supports_noise_filling) == (True, True, None, False)
    assert released.config.slow_scales == [False] * 4 and not released.config.scales_are_frequency_bands
    assert mdct.config.slow_scales == [True, False, False] and mdct.config.scales_are_frequency_bands  # gain_split 16
    mdct.config.noise_filling_levels = [0.1] * 200
    assert mdct.supports_noise_filling
    # one module per design; its parts are the tokenizer's submodules under the names saved weights use
    assert type(released.design).__name__ == "ReleasedDesign" and type(mdct.design).__name__ == "MdctDesign"
    assert {k.split(".")[0] for k in released.state_dict()} == {"encoder", "quantizers", "decoder"}
    assert {k.split(".")[0] for k in mdct.state_dict()} == {"quantizers", "refiner"}
    assert mdct.design.refiner is mdct.refiner and mdct.design.quantizers is mdct.quantizers
    mdct.refiner = None  # a part replaced on the tokenizer is the one the design runs
    assert mdct.design.refiner is None and not any(k.startswith("refiner") for k in mdct.state_dict())
    with pytest.raises(ValueError, match="decode_spectrum belongs to the released design"):
        mdct.decode_spectrum(torch.zeros(1, 3, 2, 2, 3, dtype=torch.long), ["c3", "c4"])
    with pytest.raises(ValueError, match="mdct_shapes belongs to the mdct design"):
        released.mdct_shapes(torch.zeros(1, 2, 3, 200))


def test_each_design_validates_its_own_fields():
    mdct = dict(token_design="mdct", amplitude_side_information="scale_tokens", quantizer_type="standard")
    assert NeuroRVQConfig(**mdct, hidden_size=7).hidden_size == 7  # a released-design field: not the mdct's concern
    with pytest.raises(ValueError, match="hidden_size"):
        NeuroRVQConfig(hidden_size=7)
    with pytest.raises(ValueError, match="refiner_heads"):
        NeuroRVQConfig(**mdct, refiner_heads=0)
    config = NeuroRVQConfig(**mdct)  # every field is an attribute, whatever the design: config.json keeps them all
    assert config.conv_kernel_sizes == [[21, 9], [15, 7], [9, 5], [5, 3]] and config.band_edges == [0, 16, 32, 60, 200]
    assert NeuroRVQConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_mdct_config_is_validated():
    with pytest.raises(ValueError, match="band_edges"):
        NeuroRVQConfig(token_design="mdct", band_edges=[0, 50, 40, 200], amplitude_side_information="scale_tokens",
                       quantizer_type="standard")
    with pytest.raises(ValueError, match="scale_tokens"):
        NeuroRVQConfig(token_design="mdct", quantizer_type="standard")
    with pytest.raises(ValueError, match="token_design"):
        NeuroRVQConfig(token_design="wavelet")


def test_noise_filling_restores_the_band_power_coarse_codes_lose(fitted, prepared):
    from neurorvq.lbm.evaluation import band_powers

    output, _ = fitted
    model = NeuroRVQTokenizer.from_pretrained(output).eval()
    levels = model.config.noise_filling_levels  # fitted by train_tokenizer, saved with the model
    assert levels is not None and len(levels) == 200 and min(levels) >= 0
    assert json.loads((output / "noise_filling.json").read_text())["frames"] > 0
    real_db, plain_db, filled_db = [], [], []
    for row in load_prepared(prepared, "validation"):  # unseen subjects
        valid = int(row["valid_samples"]) // 200 * 200
        x = torch.as_tensor(np.asarray(row["input_values"], dtype=np.float32)[:, :valid])[None]
        names = list(row["channel_names"])
        encoded = model.encode(x, names)
        plain = model.decode(encoded.codes, names, scale_codes=encoded.scale_codes)
        filled = model.decode(encoded.codes, names, scale_codes=encoded.scale_codes, noise_filling=True,
                              generator=torch.Generator().manual_seed(0))
        for store, signal in ((real_db, x), (plain_db, plain), (filled_db, filled)):
            store.append(band_powers(signal[0].numpy()))
    real_db, plain_db, filled_db = (np.concatenate(v).mean(0) for v in (real_db, plain_db, filled_db))
    lost, restored = np.abs(plain_db - real_db), np.abs(filled_db - real_db)
    # 16-code tiny codebooks lose much band power (several dB); the fitted noise gives most of it back (the bundled
    # model's figures are in its model card: every band within 0.6 dB)
    assert lost.max() > 3.0, lost
    assert (restored[lost > 1.0] < lost[lost > 1.0]).all(), (lost, restored)
    assert restored.sum() < lost.sum() / 2, (lost, restored)


def test_noise_filling_is_reproducible_masked_and_off_by_default():
    model = random_codebook_model()
    x, names = 20 * torch.randn(2, 3, 800), ["c3", "cz", "c4"]
    encoded = model.encode(x, names)

    def decode(**kwargs):
        return model.decode(encoded.codes, names, scale_codes=encoded.scale_codes, **kwargs)

    plain = decode()
    assert torch.equal(decode(noise_filling=True), plain)  # no fitted levels: nothing to add
    model.config.noise_filling_levels = [0.5] * 200
    assert torch.equal(decode(), plain)  # off by default: the MSE-optimal decoding
    a = decode(noise_filling=True, generator=torch.Generator().manual_seed(1))
    b = decode(noise_filling=True, generator=torch.Generator().manual_seed(1))
    c = decode(noise_filling=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, plain)
    assert a.var() > plain.var()
    # a mask fills only the patches it selects: with the first patch kept, the first half second (where no later
    # frame reaches) decodes exactly as without noise
    only_later = decode(noise_filling=torch.arange(4) >= 1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(only_later[..., :100], plain[..., :100]) and not torch.allclose(only_later[..., 300:], plain[..., 300:])
    with pytest.raises(ValueError, match="noise_filling"):
        decode(noise_filling=torch.ones(5, dtype=torch.bool))


def test_noise_filling_levels_are_validated():
    mdct = dict(token_design="mdct", amplitude_side_information="scale_tokens", quantizer_type="standard")
    with pytest.raises(ValueError, match="noise_filling_levels"):
        NeuroRVQConfig(**mdct, noise_filling_levels=[0.1] * 10)
    with pytest.raises(ValueError, match="noise_filling_levels"):
        NeuroRVQConfig(**mdct, noise_filling_levels=[-0.1] * 200)
    with pytest.raises(ValueError, match="mdct design"):
        NeuroRVQConfig(noise_filling_levels=[0.1] * 200)
    with pytest.raises(ValueError, match="difference_loss_weight"):
        NeuroRVQConfig(difference_loss_weight=3.0)
    with pytest.raises(ValueError, match="difference_loss_weight"):
        NeuroRVQConfig(**mdct, difference_loss_weight=-1.0)
    assert NeuroRVQConfig(**mdct, noise_filling_levels=[0.1] * 200).noise_filling_levels == [0.1] * 200


def test_difference_loss_is_the_step_error_of_real_samples_and_weighted_into_the_loss():
    model = random_codebook_model()
    x, names = 20 * torch.randn(2, 3, 800), ["c3", "cz", "c4"]
    out = model(x, names)
    steps = torch.diff(out.zscored_reconstruction - out.zscored_input, dim=-1)
    assert torch.allclose(out.difference_loss, steps.pow(2).mean())
    assert torch.equal(out.loss, out.time_loss)  # weight 0 (the default): the loss as before
    model.config.difference_loss_weight = 3.0
    weighted = model(x, names)
    assert torch.allclose(weighted.loss, weighted.time_loss + 3.0 * weighted.difference_loss)
    # a padded last second: only steps between two real samples count
    mask = torch.ones(2, 3, 800)
    mask[1, :, 600:] = 0
    padded = model(x, names, padding_mask=mask)
    steps = torch.diff(padded.zscored_reconstruction - padded.zscored_input, dim=-1)
    real = (mask[..., 1:] * mask[..., :-1]).bool()
    assert torch.allclose(padded.difference_loss, steps[real].pow(2).mean())


# ---- chunked decoding ------------------------------------------------------------------------------------------


def test_lapped_transform_synthesises_a_span_from_its_frames_and_one_neighbour_each_side():
    transform = LappedTransform(200)
    coefficients = 10 * torch.randn(2, 3, 7, 200, generator=torch.Generator().manual_seed(0))
    whole = transform.inverse(coefficients)
    for start, stop in ((0, 3), (3, 5), (5, 7), (0, 7), (2, 3)):
        low, high = max(start - 1, 0), min(stop + 1, 7)
        span = transform.inverse(coefficients[:, :, low:high], halo=(start > 0, stop < 7))
        assert span.shape == (2, 3, (stop - start) * 200)
        assert torch.allclose(span, whole[..., start * 200: stop * 200], rtol=0, atol=1e-5 * float(whole.abs().max()))
    with pytest.raises(ValueError, match="halo"):
        transform.inverse(coefficients[:, :, :2], halo=(True, True))


def chunking_model(refiner: bool = True) -> NeuroRVQTokenizer:
    """The tiny mdct config with random codebooks, 4-patch refiner windows over 3 channels (max_patches 12) and a
    refiner whose output layer is random (an untrained one changes nothing, which would hide a wrong window), or
    none."""
    torch.manual_seed(0)
    config = NeuroRVQConfig.from_json_file(str(TINY_MDCT))
    config.max_patches = 12
    model = NeuroRVQTokenizer(config).eval()
    with torch.no_grad():
        for quantizer in model.quantizers:
            for stage in quantizer.stages:
                stage.codebook.normal_()
        model.refiner.frame_out.weight.normal_(std=0.05)
    if not refiner:
        model.refiner = None
    return model


def assert_same_signal(chunked: torch.Tensor, whole: torch.Tensor) -> None:
    """Chunks change nothing but float32 round-off: the refiner sees the same windows, the noise is the same draws,
    the overlap-add sums the same two frames per sample; only the inverse MDCT's matmul runs on fewer frames, and a
    BLAS may order its sums by the matrix size. Hence allclose at 1e-5 of the peak (~1e-3 µV at 100 µV, a hundred
    float32 steps), far below what a wrong window or halo frame changes (whole µV). On CPU they are mostly bitwise."""
    assert torch.isfinite(whole).all()
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-5 * float(whole.abs().max()))


NAMES3 = ["c3", "cz", "c4"]


@pytest.fixture(scope="module")
def long_codes():
    """Codes of 23 patches (not a multiple of any chunk below; the last refiner window is 3 patches)."""
    model = chunking_model()
    encoded = model.encode(20 * torch.randn(2, 3, 23 * 200, generator=torch.Generator().manual_seed(3)), NAMES3)
    return encoded.codes, encoded.scale_codes


@pytest.mark.parametrize("refiner", [True, False])
@pytest.mark.parametrize("chunk_patches", [1, 4, 5, 8, 12, 22])
def test_chunked_decode_equals_whole_decode(long_codes, refiner, chunk_patches):
    """Any chunk size (rounded up to whole 4-patch refiner windows: 1 -> 4, 5 -> 8, 22 -> 24) decodes what one
    chunk of the whole length does, with and without a refiner and with a patch mask."""
    model, (codes, scale_codes) = chunking_model(refiner), long_codes
    mask = torch.ones(2, 3, 23, dtype=torch.bool)
    mask[1, :, 21:] = False  # padded end
    mask[0, :, 20:] = False  # a wholly padded last refiner window (its refiner attends to itself: finite)
    mask[0, 1, 5:10] = False

    def decode(chunk, patch_mask=None):
        return model.decode(codes, NAMES3, scale_codes=scale_codes, patch_mask=patch_mask, chunk_patches=chunk)

    assert_same_signal(decode(chunk_patches), decode(23))
    assert_same_signal(decode(chunk_patches, mask), decode(23, mask))
    if refiner:  # the mask reaches the refiner: masked decoding differs
        assert not torch.allclose(decode(chunk_patches, mask), decode(chunk_patches))


def test_one_refiner_window_per_chunk_is_the_smallest_chunk(long_codes):
    model, (codes, scale_codes) = chunking_model(), long_codes
    decode = lambda chunk: model.decode(codes, NAMES3, scale_codes=scale_codes, chunk_patches=chunk)  # noqa: E731
    assert torch.equal(decode(1), decode(4))  # both one 4-patch window per chunk: the same computation
    assert_same_signal(decode(4), decode(10 ** 6))


def test_chunked_noise_filling_equals_whole_and_is_reproducible(long_codes):
    """The noise is drawn per refiner window in patch order, whatever the chunks: a seeded chunked decoding is the
    whole one, and reproducible (bitwise: the same computation twice)."""
    model, (codes, scale_codes) = chunking_model(), long_codes
    model.config.noise_filling_levels = [0.5] * 200

    def decode(chunk, seed=1):
        return model.decode(codes, NAMES3, scale_codes=scale_codes, noise_filling=True, chunk_patches=chunk,
                            generator=torch.Generator().manual_seed(seed))

    whole = decode(23)
    for chunk in (1, 8, 12):
        assert_same_signal(decode(chunk), whole)
    assert torch.equal(decode(8), decode(8))
    assert not torch.allclose(decode(8, seed=2), decode(8))
    plain = model.decode(codes, NAMES3, scale_codes=scale_codes)
    assert not torch.allclose(whole, plain)
    # a fill mask (a real prompt of 9 patches, then generated ones) and a patch mask, chunked: the same too
    filled, patch_mask = torch.arange(23) >= 9, torch.ones(2, 3, 23, dtype=torch.bool)
    patch_mask[0, :, 22:] = False
    masked = lambda chunk: model.decode(codes, NAMES3, scale_codes=scale_codes, noise_filling=filled,  # noqa: E731
                                        patch_mask=patch_mask, chunk_patches=chunk,
                                        generator=torch.Generator().manual_seed(1))
    assert_same_signal(masked(4), masked(23))
    assert torch.equal(masked(4)[..., :8 * 200], model.decode(codes, NAMES3, scale_codes=scale_codes,
                                                             patch_mask=patch_mask)[..., :8 * 200])


def test_default_decode_is_chunked_by_decode_chunk_patches(long_codes, monkeypatch):
    from neurorvq.tokenizer import design_mdct

    model, (codes, scale_codes) = chunking_model(), long_codes
    whole = model.decode(codes, NAMES3, scale_codes=scale_codes, chunk_patches=23)
    monkeypatch.setattr(design_mdct, "DECODE_CHUNK_PATCHES", 6)  # -> 8 (two refiner windows)
    assert model.design.decode_chunk(None, 3) == 8
    assert_same_signal(model.decode(codes, NAMES3, scale_codes=scale_codes), whole)


@pytest.mark.parametrize("chunk_patches", [0, -4, 2.5, True, "8"])
def test_invalid_chunk_size_is_an_error(long_codes, chunk_patches):
    model, (codes, scale_codes) = chunking_model(), long_codes
    with pytest.raises(ValueError, match="chunk_patches"):
        model.decode(codes, NAMES3, scale_codes=scale_codes, chunk_patches=chunk_patches)


def test_coherent_noise_keeps_each_channels_power_and_takes_the_decoded_bands_correlation(eeg_dir):
    """Independent noise filling adds detail uncorrelated between electrodes (it whitens their covariance); coherent
    noise filling gives the added detail the inter-channel correlation of the decoded band, at the same power."""
    from neurorvq.tokenizer import NeuroRVQFeatureExtractor

    model = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small").eval()
    batch = NeuroRVQFeatureExtractor()(str(eeg_dir / "eegmat" / "Subject02_1.edf"), return_tensors="pt")
    x, names = batch["input_values"][:1, :, : 12 * 200], list(batch["channel_names"])
    encoded = model.encode(x, names)
    decode = lambda **kw: model.decode(encoded.codes, names, scale_codes=encoded.scale_codes,  # noqa: E731
                                       generator=torch.Generator().manual_seed(0), **kw)[0].numpy()
    plain, independent, coherent = decode(), decode(noise_filling=True), decode(noise_filling=True, coherent_noise=True)
    added = {"independent": independent - plain, "coherent": coherent - plain}
    power = {k: (v ** 2).mean(-1) for k, v in added.items()}
    assert 0.7 < float(np.median(power["coherent"] / power["independent"])) < 1.4  # the same detail per channel
    upper = np.triu_indices(len(names), 1)
    correlation = {k: np.abs(np.corrcoef(v)[upper]).mean() for k, v in added.items()}
    decoded = np.abs(np.corrcoef(plain)[upper]).mean()
    assert correlation["independent"] < 0.15 < correlation["coherent"], (correlation, decoded)
    assert not np.allclose(coherent, independent)
