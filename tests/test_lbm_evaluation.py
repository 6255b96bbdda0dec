"""LBM evaluation: count baselines on code rows with a known structure, spectra of known noises, and the
realism report / figure on synthetic EEG-like signals (no model, no real data; a few seconds in all)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurorvq.lbm.count_models import bigram_nll, count_baselines, row_streams, unigram_nll
from neurorvq.lbm.evaluation_plots import plot_realism
from neurorvq.lbm.realism_metrics import BANDS, band_powers, spectral_slope
from neurorvq.lbm.realism_pooled import format_realism, pooled_realism
from neurorvq.lbm.layout import CodeLayout

FS = 200


# ----------------------------------------------------------------------------------------------------
# Code rows
# ----------------------------------------------------------------------------------------------------


def code_row(codes: np.ndarray, scale_codes: np.ndarray | None = None, valid_patches: int | None = None) -> dict:
    """A code row as `load_codes` yields it: codes [S, K, C, A], scale_codes [2, C, A] or empty."""
    _, _, channels, patches = codes.shape
    scale = np.zeros((0, channels, patches), dtype=np.int16) if scale_codes is None else scale_codes.astype(np.int16)
    return {"codes": codes.astype(np.int16), "scale_codes": scale, "channel_indices": np.arange(channels),
            "valid_patches": patches if valid_patches is None else valid_patches, "subject_id": "s0"}


def persistent_rows(rng, count: int, vocab: int, channels: int = 4, patches: int = 64) -> list[dict]:
    """S=1, K=2: stream 0 repeats its code over time (code(a, c) == code(a - 1, c)), stream 1 is uniform."""
    rows = []
    for _ in range(count):
        codes = np.empty((1, 2, channels, patches), dtype=np.int64)
        codes[0, 0] = rng.integers(0, vocab, (channels, 1))
        codes[0, 1] = rng.integers(0, vocab, (channels, patches))
        rows.append(code_row(codes))
    return rows


def test_row_streams_follow_the_layout_order_and_drop_padding():
    layout = CodeLayout(num_scales=2, num_quantizers=3, codebook_size=100, num_scale_tokens=10)
    codes = np.arange(2 * 3 * 2 * 5).reshape(2, 3, 2, 5) % 100
    scale = np.arange(2 * 2 * 5).reshape(2, 2, 5) % 10
    streams = row_streams(code_row(codes, scale, valid_patches=4))
    assert streams.shape == (4, 2, layout.num_streams)
    a, c = 3, 1
    expected = [scale[0, c, a], scale[1, c, a]] + [codes[s, k, c, a] for s in range(2) for k in range(3)]
    assert streams[a, c].tolist() == expected


def test_bigram_captures_a_persistent_stream_the_unigram_cannot():
    rng = np.random.default_rng(0)
    vocab = 16
    train, validation = persistent_rows(rng, 100, vocab), persistent_rows(rng, 20, vocab)
    unigram = unigram_nll(train, validation, [vocab, vocab])
    bigram = bigram_nll(train, validation, [vocab, vocab])
    # stream 0: unigram pays log2(16) = 4 bits; bigram pays 4 bits on the first of 64 patches, ~0 after
    assert unigram["bits_per_stream"][0] > 3.9
    assert bigram["bits_per_stream"][0] < 0.15
    # stream 1 is uniform noise either way
    assert abs(unigram["bits_per_stream"][1] - 4) < 0.05
    assert bigram["bits_per_stream"][1] > 3.9
    assert bigram["bits_per_code"] < unigram["bits_per_code"] - 1.5
    for result in (unigram, bigram):
        assert result["bits_per_code"] == pytest.approx(np.mean(result["bits_per_stream"]))
        assert result["bits_per_position"] == pytest.approx(2 * result["bits_per_code"])
        assert result["num_codes"] == 20 * 4 * 64 * 2


def test_count_baselines_find_the_context_each_stream_depends_on():
    rng = np.random.default_rng(8)
    vocab, channels, patches = 16, 4, 20

    def rows(count):
        out = []
        for _ in range(count):
            codes = rng.integers(0, vocab, (1, 3, channels, patches))
            codes[0, 0] = codes[0, 0, :1]  # stream 0: every channel repeats channel 0 (same second)
            codes[0, 1] = codes[0, 1, :, :1]  # stream 1: every second repeats second 0 (same channel)
            out.append(code_row(codes))  # stream 2: uniform noise
        return out

    result = count_baselines(rows(150), rows(30), [vocab] * 3)
    log2v = math.log2(vocab)
    assert result["unigram"]["bits_per_stream"] == pytest.approx([log2v] * 3, abs=0.1)
    channel, second = result["previous_channel"]["bits_per_stream"], result["previous_second"]["bits_per_stream"]
    assert channel[0] < 0.4 * log2v and channel[1] > 0.9 * log2v  # only the first channel pays
    assert second[1] < 0.2 * log2v and second[0] > 0.9 * log2v
    mixed = result["interpolated"]
    for stream in range(3):  # the mixture is never much worse than its best member
        best = min(result[name]["bits_per_stream"][stream] for name in ("unigram", "previous_channel", "previous_second"))
        assert mixed["bits_per_stream"][stream] < best + 0.3
    assert mixed["bits_per_position"] < min(result[n]["bits_per_position"] for n in ("unigram", "previous_channel",
                                                                                     "previous_second"))
    assert len(mixed["weights"]) == 3 and all(abs(sum(w) - 1) < 1e-6 for w in mixed["weights"])


def test_unigram_of_uniform_codes_is_log2_vocab():
    rng = np.random.default_rng(1)
    vocab = 256
    rows = [code_row(rng.integers(0, vocab, (2, 2, 3, 30))) for _ in range(120)]
    result = unigram_nll(rows[:100], rows[100:], [vocab] * 4)
    assert result["bits_per_code"] == pytest.approx(math.log2(vocab), abs=0.05)
    assert result["bits_per_position"] == pytest.approx(4 * math.log2(vocab), abs=0.2)


def test_padding_patches_are_ignored():
    rng = np.random.default_rng(2)
    vocab_sizes = [8, 8, 32, 32]  # two scale streams, S=1, K=2

    def rows(count, garbage: bool):
        out = []
        for _ in range(count):
            codes, scale = rng.integers(0, 32, (1, 2, 3, 12)), rng.integers(0, 8, (2, 3, 12))
            valid = int(rng.integers(1, 13))
            if garbage:  # padding patches all the same code: would dominate both baselines if counted
                codes[..., valid:], scale[..., valid:] = 0, 0
            out.append(code_row(codes, scale, valid_patches=valid))
        return out

    state = rng.bit_generator.state
    clean = rows(60, garbage=False)
    rng.bit_generator.state = state
    padded = rows(60, garbage=True)
    assert any(r["valid_patches"] < 12 for r in clean)
    for baseline in (unigram_nll, bigram_nll):
        reference = baseline(clean[:40], clean[40:], vocab_sizes)
        result = baseline(padded[:40], padded[40:], vocab_sizes)
        assert result["bits_per_code"] == pytest.approx(reference["bits_per_code"], rel=1e-12)
        assert result["bits_per_stream"] == pytest.approx(reference["bits_per_stream"], rel=1e-12)
        assert result["num_positions"] == sum(r["valid_patches"] for r in clean[40:]) * 3


def test_baselines_reject_codes_outside_the_vocabulary():
    row = code_row(np.full((1, 1, 2, 4), 9))
    with pytest.raises(ValueError, match="vocabulary"):
        unigram_nll([row], [row], [8])
    with pytest.raises(ValueError, match="streams"):
        bigram_nll([row], [row], [16, 16])


# ----------------------------------------------------------------------------------------------------
# Spectra
# ----------------------------------------------------------------------------------------------------


def shaped_noise(rng, channels: int, samples: int, exponent: float, alpha_gain: float = 0.0) -> np.ndarray:
    """White noise shaped in the FFT to a power spectrum ~ 1 / f^exponent (plus an optional ~10 Hz
    alpha bump, amplitude gain `alpha_gain`), [channels, samples]."""
    spectrum = np.fft.rfft(rng.standard_normal((channels, samples)), axis=-1)
    f = np.fft.rfftfreq(samples, 1 / FS)
    gain = np.zeros_like(f)
    gain[1:] = f[1:] ** (-exponent / 2)
    gain *= 1 + alpha_gain * np.exp(-0.5 * ((f - 10) / 1.0) ** 2)
    return np.fft.irfft(spectrum * gain, n=samples, axis=-1)


def eeg_like(rng, items: int, channels: int = 4, seconds: int = 8) -> list[np.ndarray]:
    """1/f background with an alpha peak, ~20 µV, item amplitudes varying by ~±20%."""
    out = []
    for _ in range(items):
        x = shaped_noise(rng, channels, seconds * FS, exponent=1.0, alpha_gain=3.0)
        out.append(x / x.std() * 20 * math.exp(0.2 * rng.standard_normal()))
    return out


def test_band_powers_of_a_10hz_sine_peak_in_alpha():
    t = np.arange(10 * FS) / FS
    x = np.stack([30 * np.sin(2 * np.pi * 10 * t), 5 * np.sin(2 * np.pi * 10 * t + 1)])
    powers = band_powers(x)
    assert powers.shape == (2, len(BANDS))
    assert (powers.argmax(1) == list(BANDS).index("alpha")).all()
    # sine power A^2 / 2 -> 30 µV: 10 log10(450) = 26.5 dB
    assert powers[0, list(BANDS).index("alpha")] == pytest.approx(10 * math.log10(450), abs=0.5)


def test_spectral_slope_of_pink_and_brown_noise():
    rng = np.random.default_rng(3)
    pink = spectral_slope(shaped_noise(rng, 4, 60 * FS, exponent=1.0))
    brown = spectral_slope(shaped_noise(rng, 4, 60 * FS, exponent=2.0))
    white = spectral_slope(rng.standard_normal((4, 60 * FS)))
    assert pink.shape == (4,)
    assert abs(pink.mean() + 1) < 0.2
    assert abs(brown.mean() + 2) < 0.3
    assert abs(white.mean()) < 0.2


# ----------------------------------------------------------------------------------------------------
# Realism report and figure
# ----------------------------------------------------------------------------------------------------


def test_realism_of_a_second_sample_of_the_same_process():
    rng = np.random.default_rng(4)
    # many short items: folds keep items whole, so the item count sets the accuracy's noise
    report = pooled_realism(eeg_like(rng, 80, seconds=8), eeg_like(rng, 80, seconds=8))
    classifier = report["classifier"]
    assert classifier["n_segments_per_class"] == 80 * 2  # 4-s segments of all channels
    assert classifier["accuracy"] < 0.65
    assert report["amplitude"]["ratio"] == pytest.approx(1.0, abs=0.15)
    assert abs(report["correlation"]["synthetic"] - report["correlation"]["real"]) < 0.05
    for band in BANDS:
        assert abs(report["bands"][band]["difference_db"]) < 1.0
    assert abs(report["slope"]["synthetic_mean"] - report["slope"]["real_mean"]) < 0.1
    table = format_realism(report)
    assert table.count("\n") == len(BANDS) + 6 and "alpha" in table and "accuracy" in table


def test_realism_of_white_noise_against_eeg():
    rng = np.random.default_rng(5)
    real = eeg_like(rng, 20, seconds=20)
    # white noise of the same overall amplitude, mixed channel counts, one item too short to segment
    noise = [20 * rng.standard_normal((channels, 20 * FS)) for channels in (3, 4, 5, 4) * 5]
    noise.append(20 * rng.standard_normal((4, 600)))
    report = pooled_realism(noise, real)
    classifier = report["classifier"]
    # the classifier sees the items of the shared channel count (4): ten 20-s items, the 3-s one gives no 4-s window
    assert classifier["n_channels"] == 4 and classifier["n_segments_per_class"] == 10 * 5
    assert classifier["accuracy"] > 0.9
    # white noise lacks the 1/f excess at low frequencies and the alpha peak, and has more gamma
    assert report["bands"]["alpha"]["difference_db"] < -5
    assert report["bands"]["delta"]["difference_db"] < -5
    assert report["bands"]["gamma"]["difference_db"] > 4
    assert report["slope"]["synthetic_mean"] - report["slope"]["real_mean"] > 0.7


def test_realism_sees_missing_inter_channel_correlation_and_seams():
    rng = np.random.default_rng(7)
    real = []
    for item in eeg_like(rng, 40, channels=6, seconds=8):  # a shared source on every channel: correlated
        real.append(item + 2 * item[:1])
    independent = eeg_like(rng, 40, channels=6, seconds=8)  # same spectra, channels independent
    blocky = []
    for item in independent:  # every 1-s block shifted by its own offset: jumps at the seams
        offsets = np.repeat(rng.normal(0, 20, (item.shape[0], item.shape[1] // FS)), FS, axis=1)
        blocky.append(item + offsets)
    report = pooled_realism(independent, real)
    assert report["correlation"]["real"] > report["correlation"]["synthetic"] + 0.3
    assert report["classifier"]["accuracy"] > 0.9  # the correlation feature alone separates them
    seams = pooled_realism(blocky, real)["seam"]
    assert seams["synthetic"] > 3 * seams["real"]


def test_plot_realism_writes_a_png(tmp_path):
    rng = np.random.default_rng(6)
    path = plot_realism(eeg_like(rng, 3, seconds=8), eeg_like(rng, 3, seconds=8), tmp_path / "fig" / "realism.png",
                        channel_names=["fp1", "cz", "o1", "o2"])
    assert path.is_file() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
