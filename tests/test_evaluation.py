"""Evaluation metrics, the DCT reference codec and the tokenizer evaluation on known signals (fast, no trained model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer, evaluation
from neurorvq.tokenizer.dct_codec import dct_at_rate, dct_codec, dct_rate_distortion
from neurorvq.tokenizer.evaluation import evaluate_tokenizer
from neurorvq.tokenizer.evaluation_plots import format_table, plot_evaluation
from neurorvq.tokenizer.metrics import (
    BANDS,
    FidelityAccumulator,
    band_errors,
    band_nmse,
    code_histogram,
    codebook_usage,
    pearson_correlation,
    zscored_mse,
)
from neurorvq.tokenizer.windows import load_windows, shape_batches

TINY = Path(__file__).parents[1] / "configs" / "tokenizer" / "tiny.json"
FS = 200


def eeg_like(channels: int, samples: int, seed: int = 0) -> np.ndarray:
    """Random walk plus a 10 Hz rhythm, [C, T] microvolts."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / FS
    walk = rng.standard_normal((channels, samples)).cumsum(axis=1) * 0.5
    alpha = 20 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (channels, 1)))
    return walk - walk.mean(axis=1, keepdims=True) + alpha


def row(x: np.ndarray, names: list[str], valid: int | None = None) -> dict:
    valid = x.shape[1] if valid is None else valid
    x = x.astype(np.float32).copy()
    x[:, valid:] = 0
    return {"input_values": x.tolist(), "valid_samples": valid, "channel_names": names,
            "recording_id": "r", "subject_id": "s"}


# ---- fidelity metrics ----------------------------------------------------------------------------------


def test_zscored_mse_of_identity_is_zero_and_of_negation_is_exact():
    x = eeg_like(3, 400)
    n = x.size
    assert zscored_mse(x, x) == pytest.approx(0.0, abs=1e-12)
    # z(-x) = -z(x), so the MSE is 4 mean(z^2) = 4 (N - 1) / N with the unbiased std
    assert zscored_mse(x, -x) == pytest.approx(4 * (n - 1) / n, rel=1e-12)


def test_zscored_mse_is_invariant_to_scale_and_offset_of_the_reconstruction():
    x, y = eeg_like(3, 400, seed=1), eeg_like(3, 400, seed=2)
    reference = zscored_mse(x, y)
    assert reference > 0.5
    assert zscored_mse(x, 7.5 * y) == pytest.approx(reference, rel=1e-10)
    assert zscored_mse(x, 0.01 * y + 30) == pytest.approx(reference, rel=1e-10)


def test_pcc_of_affine_copy_is_one_and_flat_channels_are_skipped():
    x = eeg_like(4, 400)
    assert pearson_correlation(x, 2 * x + 3) == pytest.approx(1.0, abs=1e-12)
    assert pearson_correlation(x, -x) == pytest.approx(-1.0, abs=1e-12)
    y = 2 * x + 3
    y[1] = 5.0  # a flat reconstructed channel has no correlation: skipped, not counted as 0
    assert pearson_correlation(x, y) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(pearson_correlation(np.ones((2, 50)), np.ones((2, 50))))


def test_band_nmse_of_removing_the_alpha_component():
    t = np.arange(10 * FS) / FS
    delta, alpha, beta = (a * np.sin(2 * np.pi * f * t) for a, f in ((30, 2.0), (15, 10.0), (5, 20.0)))
    x = np.stack([delta + alpha + beta, 0.5 * delta + alpha + beta])
    nmse = band_nmse(x, x - alpha)
    assert nmse["alpha"] == pytest.approx(1.0, abs=0.05)
    assert nmse["delta"] < 0.01
    assert nmse["beta"] < 0.05
    assert all(v == pytest.approx(0.0, abs=1e-20) for v in band_nmse(x, x).values())


def test_band_nmse_aggregates_errors_and_energies_over_windows():
    x1, x2 = eeg_like(2, 800, seed=3), 3 * eeg_like(2, 800, seed=4)
    y1, y2 = x1 + eeg_like(2, 800, seed=5), x2 * 0.5
    scores = FidelityAccumulator()
    scores.add(x1, y1)
    scores.add(x2, y2)
    e1, e2 = band_errors(x1, y1), band_errors(x2, y2)
    for band in BANDS:
        expected = (e1[band][0] + e2[band][0]) / (e1[band][1] + e2[band][1])
        assert scores.summary()["band_nmse"][band] == pytest.approx(expected, rel=1e-12)
    assert scores.summary()["zscored_mse"] == pytest.approx((zscored_mse(x1, y1) + zscored_mse(x2, y2)) / 2)


def test_padding_samples_are_ignored():
    x, y = eeg_like(3, 800, seed=6), eeg_like(3, 800, seed=7)
    valid = 650
    x2, y2 = x.copy(), y.copy()
    x2[:, valid:] = 1e4
    y2[:, valid:] = -3e3
    assert zscored_mse(x, y, valid) == zscored_mse(x2, y2, valid)
    assert pearson_correlation(x, y, valid) == pearson_correlation(x2, y2, valid)
    assert band_nmse(x, y, valid) == band_nmse(x2, y2, valid)
    assert zscored_mse(x, y, valid) != zscored_mse(x2, y2)
    reconstruction, bits = dct_codec(x, 1.0, valid)
    reconstruction2, bits2 = dct_codec(x2, 1.0, valid)
    assert bits == bits2
    np.testing.assert_array_equal(reconstruction, reconstruction2)
    assert not reconstruction[:, valid:].any()


# ---- codebook usage -------------------------------------------------------------------------------------


def test_codebook_usage_and_perplexity_of_a_known_histogram():
    codes = torch.zeros(1, 1, 2, 1, 10, dtype=torch.long)  # [B, S, K, C, A]
    codes[0, 0, 0, 0] = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 7, 7])
    codes[0, 0, 1, 0] = 5
    patch_mask = torch.ones(1, 1, 10, dtype=torch.bool)
    patch_mask[0, 0, 8:] = False  # the two 7s are padding
    histogram = code_histogram(codes, 8, patch_mask)
    assert histogram.shape == (1, 2, 8)
    np.testing.assert_array_equal(histogram[0, 0], [2, 2, 2, 2, 0, 0, 0, 0])
    usage, perplexity = codebook_usage(histogram)
    np.testing.assert_allclose(usage[0], [0.5, 1 / 8])
    np.testing.assert_allclose(perplexity[0], [4.0, 1.0])
    _, skewed = codebook_usage(np.array([3, 1]))
    assert skewed == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


# ---- DCT reference codec ---------------------------------------------------------------------------------


def test_dct_codec_bits_fall_and_error_rises_with_step():
    x = eeg_like(8, 30 * FS, seed=8)
    results = [dct_codec(x, step) for step in (0.5, 2.0, 8.0, 32.0)]
    bits = [b for _, b in results]
    errors = [zscored_mse(x, y) for y, _ in results]
    assert all(a > b for a, b in zip(bits, bits[1:])), bits
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    reconstruction, _ = dct_codec(x, 1e-6)
    np.testing.assert_allclose(reconstruction, x, atol=1e-5)


def test_dct_at_rate_hits_its_target_and_the_curve_is_monotone():
    windows = [row(eeg_like(4, 4 * FS, seed=s), ["fp1", "fp2", "c3", "c4"]) for s in range(6)]
    for target in (40.0, 150.0):
        result = dct_at_rate(windows, target)
        assert result["bits_per_channel_second"] == pytest.approx(target, rel=0.05)
        assert set(result) == {"step", "bits_per_channel_second", "zscored_mse", "pcc", "band_nmse", "amplitude_ratio",
                               "seam_ratio"}
    low, high = dct_at_rate(windows, 40.0), dct_at_rate(windows, 150.0)
    assert high["zscored_mse"] < low["zscored_mse"]
    curve = dct_rate_distortion(windows, [0.5, 2.0, 8.0])
    assert [p["bits_per_channel_second"] for p in curve] == sorted((p["bits_per_channel_second"] for p in curve),
                                                                   reverse=True)
    assert [p["zscored_mse"] for p in curve] == sorted(p["zscored_mse"] for p in curve)


# ---- rows and batches --------------------------------------------------------------------------------------


def test_windows_from_a_numpy_formatted_dataset_and_shape_batches():
    datasets = pytest.importorskip("datasets")
    rows = [row(eeg_like(2, 400, s), ["c3", "c4"], valid=300 if s == 2 else None) for s in range(3)]
    rows.append(row(eeg_like(3, 200, 9), ["c3", "c4", "cz"]))
    dataset = datasets.Dataset.from_list(rows).with_format("numpy")
    windows = load_windows(dataset)
    assert [w.shape for w in windows] == [(2, 400)] * 3 + [(3, 200)]
    assert [w.valid_samples for w in windows] == [400, 400, 300, 200]
    assert windows[3].channel_names == ["c3", "c4", "cz"]
    np.testing.assert_allclose(windows[0].input_values, np.asarray(rows[0]["input_values"]), rtol=0)
    assert [len(b) for b in shape_batches(windows, 2)] == [2, 1, 1]


def test_moved_names_are_still_importable_from_evaluation():
    """The windows, metrics, codec and report moved out of `tokenizer.evaluation`; it re-exports them (same objects)."""
    from neurorvq.tokenizer import dct_codec as codec_module
    from neurorvq.tokenizer import evaluation_plots, metrics, windows

    for module in (codec_module, evaluation_plots, metrics, windows):
        for name in module.__all__:
            assert getattr(evaluation, name) is getattr(module, name), (module.__name__, name)
    assert all(hasattr(evaluation, name) for name in evaluation.__all__)


# ---- the tokenizer ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> NeuroRVQTokenizer:
    torch.manual_seed(0)
    model = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(TINY)))
    model.train()
    model(torch.randn(2, 4, 800) * 20, ["fp1", "fp2", "c3", "c4"])  # k-means initialises the codebooks
    return model.eval()


@pytest.fixture(scope="module")
def fake_rows() -> list[dict]:
    four = ["fp1", "fp2", "c3", "c4"]
    rows = [row(eeg_like(4, 4 * FS, seed=s), four) for s in range(3)]
    rows[2] = row(eeg_like(4, 4 * FS, seed=2), four, valid=3 * FS + 50)  # a padded last window
    rows += [row(eeg_like(2, 2 * FS, seed=10 + s), ["o1", "o2"]) for s in range(3)]
    return rows


def test_fewer_stages_decode_the_prefix_of_the_full_codes(tiny_model):
    x = torch.from_numpy(eeg_like(4, 4 * FS, seed=11)).float()[None]
    names = ["fp1", "fp2", "c3", "c4"]
    full = tiny_model.encode(x, names).codes
    for k in range(1, tiny_model.config.num_quantizers):
        torch.testing.assert_close(tiny_model.encode(x, names, num_quantizers=k).codes, full[:, :, :k])


def test_evaluate_tokenizer_and_plot(tiny_model, fake_rows, tmp_path):
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.train()  # evaluation must not update codebooks, and must restore the mode
    results = evaluate_tokenizer(tiny_model, fake_rows, batch_size=2, progress=False)
    assert tiny_model.training
    tiny_model.eval()
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)

    json.loads(json.dumps(results))
    for key in ("num_windows", "bits_per_channel_second", "zscored_mse", "pcc", "band_nmse", "codebook_usage",
                "codebook_perplexity", "rate_distortion", "dct", "dct_rate_distortion"):
        assert key in results
    config = tiny_model.config
    assert results["num_windows"] == 6
    assert set(results["band_nmse"]) == set(BANDS)
    assert np.shape(results["codebook_usage"]) == (config.num_scales, config.num_quantizers)
    assert all(0 < u <= 1 for scale in results["codebook_usage"] for u in scale)
    assert all(1 <= p <= config.codebook_size for scale in results["codebook_perplexity"] for p in scale)
    curve = results["rate_distortion"]
    assert [p["num_quantizers"] for p in curve] == list(range(1, config.num_quantizers + 1))
    bits = [p["bits_per_channel_second"] for p in curve]
    assert all(a < b for a, b in zip(bits, bits[1:]))
    assert bits[-1] == results["bits_per_channel_second"]
    assert results["zscored_mse"] == pytest.approx(curve[-1]["zscored_mse"])
    assert results["dct"]["bits_per_channel_second"] == pytest.approx(bits[-1], rel=0.05)
    assert len(results["dct_rate_distortion"]) == config.num_quantizers

    table = format_table(results)
    assert "DCT" in table and f"{results['bits_per_channel_second']:.1f}" in table

    path = plot_evaluation(tiny_model, fake_rows, results, tmp_path / "figures" / "evaluation.png")
    assert Path(path).is_file() and Path(path).stat().st_size > 1000
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
