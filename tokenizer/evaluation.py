"""Evaluate a NeuroRVQ tokenizer: reconstruction fidelity against rate, next to a DCT transform codec.

Every signal here is EEG in **microvolts** at the model's sampling rate (200 Hz), as arrays `[C, T]`
(channels x samples). A window's first `valid_samples` samples of every channel are real, the rest zero
padding; all metrics use real samples only.

Metrics (per window, then aggregated over an evaluation set):

- `zscored_mse`: the paper's reconstruction MSE. Original and reconstruction are z-scored separately
  (mean and unbiased std over all real channels x samples of the window), then compared. Mean over windows.
- `pearson_correlation`: Pearson r per channel, averaged over non-flat channels. Mean over windows.
- `band_errors` / `band_nmse`: NMSE per EEG band after a zero-phase Butterworth band-pass; over a set,
  squared errors and energies are summed across windows before dividing.
- `amplitude_ratio`: median over channels of std(reconstruction) / std(original); median over windows
  (1 = real amplitude; an MSE-optimal decoder that shrinks uncertain components gives < 1).
- `seam_ratio`: median squared sample-to-sample step across one-second patch boundaries over the median
  squared step within patches; median over windows (real EEG: about 0.75 to 1.25; blocky decoding: >> 1).
- `code_histogram` / `codebook_usage`: per (scale, stage), the fraction of the codebook used and the
  perplexity (exp of the entropy, nats) of the code histogram.

Rate is reported in bits per channel-second of real signal. The reference is `DCTCodec`: per channel,
per one-second block, an orthonormal DCT-II, a uniform quantiser and an ideal entropy coder (empirical
entropy per DCT coefficient index, estimated on the evaluation set itself, so the code tables are free).

Entry points: `evaluate_tokenizer`, `plot_evaluation`, `format_table`; `dct_codec`, `dct_at_rate`,
`dct_rate_distortion` for the reference codec alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from scipy import signal as scipy_signal
from scipy.fft import dct, idct
from tqdm.auto import tqdm

from .configuration_neurorvq import PATCH_SIZE, SAMPLING_RATE  # defaults where no model is at hand (200 Hz, 1 s)

BLOCK_SIZE = PATCH_SIZE  # samples per DCT block by default (one second, like one model patch)
BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
BAND_FILTER_ORDER = 4
FLAT_STD = 1e-9  # a channel whose std is below this (µV) has no defined correlation
ZSCORE_VAR_EPS = 1e-8  # variance floor of the z-score, as the model's time loss uses


# ----------------------------------------------------------------------------------------------------
# Windows: rows of a prepared dataset -> arrays
# ----------------------------------------------------------------------------------------------------


@dataclass
class Window:
    """One evaluation window.

    Attributes:
        input_values: [C, T] float32 microvolts; samples from `valid_samples` on are zero padding.
        valid_samples: number of real samples per channel.
        channel_names: the C vocabulary names.
    """

    input_values: np.ndarray
    valid_samples: int
    channel_names: list[str]

    @property
    def real(self) -> np.ndarray:
        """The real samples [C, valid_samples] (µV)."""
        return self.input_values[:, : self.valid_samples]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_values.shape)


def as_window(row: Any) -> Window:
    """A dataset row (dict with `input_values` [C][T], optional `valid_samples`, `channel_names`), a
    `Window`, or a bare array [C, T] (all samples real, no channel names) -> `Window`."""
    if isinstance(row, Window):
        return row
    if isinstance(row, Mapping):
        # rows may hold a 2-D array, an object array of channel arrays or nested lists: stack channel by channel
        values = np.stack([np.asarray(channel, dtype=np.float32) for channel in row["input_values"]])
        valid = row.get("valid_samples")
        names = row.get("channel_names")
        names = [] if names is None else [str(n) for n in names]
    else:
        values, valid, names = np.asarray(row, dtype=np.float32), None, []
    if values.ndim != 2:
        raise ValueError(f"a window must be [C, T] (channels x samples), got shape {values.shape}")
    valid = values.shape[1] if valid is None else int(valid)
    if not 0 < valid <= values.shape[1]:
        raise ValueError(f"valid_samples must be in [1, {values.shape[1]}], got {valid}")
    return Window(values, valid, names)


def load_windows(rows: Iterable[Any], max_windows: int | None = None) -> list[Window]:
    """The first `max_windows` (default all) rows of `rows` as `Window`s."""
    return [as_window(row) for row in islice(rows, max_windows)]


def shape_batches(windows: Sequence[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive windows of equal (C, T), in batches of at most `batch_size` (order kept)."""
    batch: list[Window] = []
    for window in windows:
        if batch and (len(batch) == batch_size or window.shape != batch[0].shape):
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


# ----------------------------------------------------------------------------------------------------
# Fidelity metrics on one window
# ----------------------------------------------------------------------------------------------------


def _real_part(x: Any, valid_samples: int | None) -> np.ndarray:
    """x [C, T] -> float64 [C, valid_samples] (the real samples)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected an array [C, T] (channels x samples), got shape {x.shape}")
    return x if valid_samples is None else x[:, : int(valid_samples)]


def zscore(x: np.ndarray) -> np.ndarray:
    """Z-score a window [C, T] over all its values (mean, unbiased std; variance floored at 1e-8)."""
    variance = x.var(ddof=1) if x.size > 1 else 0.0
    return (x - x.mean()) / math.sqrt(max(variance, ZSCORE_VAR_EPS))


def zscored_mse(original: Any, reconstruction: Any, valid_samples: int | None = None) -> float:
    """The paper's reconstruction MSE: mean((z(x) - z(y))^2) with each window z-scored on its own.

    Args:
        original, reconstruction: [C, T] microvolts (any common unit: the metric is scale-free).
        valid_samples: only the first `valid_samples` samples of every channel count (default: all).

    Returns:
        A float >= 0: 0 for a perfect reconstruction, about 2 for an unrelated one, 4 (N-1)/N for -x.
    """
    x, y = _real_part(original, valid_samples), _real_part(reconstruction, valid_samples)
    return float(np.mean((zscore(x) - zscore(y)) ** 2))


def pearson_correlation(original: Any, reconstruction: Any, valid_samples: int | None = None) -> float:
    """Pearson correlation per channel between [C, T] original and reconstruction, averaged over channels.

    Channels where either signal is flat (std < 1e-9) are skipped; NaN when every channel is flat.
    """
    x, y = _real_part(original, valid_samples), _real_part(reconstruction, valid_samples)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    norm_x, norm_y = np.sqrt((x ** 2).sum(axis=1)), np.sqrt((y ** 2).sum(axis=1))
    samples = max(x.shape[1], 1)
    keep = (norm_x / math.sqrt(samples) > FLAT_STD) & (norm_y / math.sqrt(samples) > FLAT_STD)
    if not keep.any():
        return float("nan")
    r = (x[keep] * y[keep]).sum(axis=1) / (norm_x[keep] * norm_y[keep])
    return float(r.mean())


@lru_cache(maxsize=None)
def _band_filter(low: float, high: float, sampling_rate: float) -> np.ndarray:
    return scipy_signal.butter(BAND_FILTER_ORDER, [low, high], btype="bandpass", fs=sampling_rate, output="sos")


def band_pass(x: np.ndarray, low: float, high: float, sampling_rate: float = SAMPLING_RATE) -> np.ndarray:
    """Zero-phase order-4 Butterworth band-pass (`sosfiltfilt`) of x [C, T] along time."""
    sos = _band_filter(float(low), float(high), float(sampling_rate))
    # scipy's default edge padding, shortened so that short windows can still be filtered
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
    return scipy_signal.sosfiltfilt(sos, x, axis=-1, padlen=padlen)


def band_errors(original: Any, reconstruction: Any, valid_samples: int | None = None,
                sampling_rate: float = SAMPLING_RATE) -> dict[str, tuple[float, float]]:
    """Per band: (sum of squared band-passed error, sum of squared band-passed original), in µV^2.

    Summing both parts over windows and dividing gives the dataset's band NMSE.
    """
    x, y = _real_part(original, valid_samples), _real_part(reconstruction, valid_samples)
    errors = {}
    for band, (low, high) in BANDS.items():
        x_band = band_pass(x, low, high, sampling_rate)
        y_band = band_pass(y, low, high, sampling_rate)
        errors[band] = (float(((x_band - y_band) ** 2).sum()), float((x_band ** 2).sum()))
    return errors


def band_nmse(original: Any, reconstruction: Any, valid_samples: int | None = None,
              sampling_rate: float = SAMPLING_RATE) -> dict[str, float]:
    """Per band: sum((x_b - y_b)^2) / sum(x_b^2) for one window [C, T] (0 = perfect, 1 = band removed)."""
    errors = band_errors(original, reconstruction, valid_samples, sampling_rate)
    return {band: _ratio(error, energy) for band, (error, energy) in errors.items()}


def amplitude_ratio(original: Any, reconstruction: Any, valid_samples: int | None = None) -> float:
    """Median over channels of std(reconstruction) / std(original) for one window [C, T] (flat channels of
    the original are skipped; NaN when all are flat)."""
    x, y = _real_part(original, valid_samples), _real_part(reconstruction, valid_samples)
    std_x, std_y = x.std(axis=1), y.std(axis=1)
    keep = std_x > FLAT_STD
    return float(np.median(std_y[keep] / std_x[keep])) if keep.any() else float("nan")


def seam_ratio(x: Any, patch_size: int = BLOCK_SIZE, valid_samples: int | None = None) -> float:
    """Median squared step x[t+1] - x[t] across patch boundaries (t + 1 a multiple of `patch_size`) over the
    median squared step inside patches, for one signal [C, T]. NaN when it has no boundary."""
    x = _real_part(x, valid_samples)
    steps = np.diff(x, axis=1) ** 2  # [C, T - 1]; step t goes from sample t to t + 1
    boundary = np.zeros(steps.shape[1], dtype=bool)
    boundary[patch_size - 1::patch_size] = True
    if not boundary.any() or boundary.all():
        return float("nan")
    within = float(np.median(steps[:, ~boundary]))
    return float(np.median(steps[:, boundary]) / within) if within > 0 else float("nan")


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


class FidelityAccumulator:
    """Collects z-scored MSE, PCC and band NMSE over windows; `summary()` aggregates them."""

    def __init__(self, sampling_rate: float = SAMPLING_RATE, patch_size: int = BLOCK_SIZE):
        self.sampling_rate = sampling_rate
        self.patch_size = patch_size  # the seams `seam_ratio` looks for: every patch_size samples
        self.zscored_mse: list[float] = []
        self.pcc: list[float] = []
        self.band_error = dict.fromkeys(BANDS, 0.0)
        self.band_energy = dict.fromkeys(BANDS, 0.0)
        self.amplitude_ratio: list[float] = []
        self.seam_ratio: list[float] = []

    def add(self, original: Any, reconstruction: Any, valid_samples: int | None = None) -> None:
        """Score one window: original and reconstruction [C, T] µV."""
        x, y = _real_part(original, valid_samples), _real_part(reconstruction, valid_samples)
        self.zscored_mse.append(zscored_mse(x, y))
        self.pcc.append(pearson_correlation(x, y))
        self.amplitude_ratio.append(amplitude_ratio(x, y))
        self.seam_ratio.append(seam_ratio(y, self.patch_size))
        for band, (error, energy) in band_errors(x, y, sampling_rate=self.sampling_rate).items():
            self.band_error[band] += error
            self.band_energy[band] += energy

    def summary(self) -> dict[str, Any]:
        """`zscored_mse` and `pcc` (means over windows; PCC skips all-flat windows), `amplitude_ratio` and
        `seam_ratio` (medians over windows) and `band_nmse` (per band, summed errors over summed energies)."""
        pcc = [p for p in self.pcc if not math.isnan(p)]
        median = lambda values: float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")  # noqa: E731
        return {
            "zscored_mse": float(np.mean(self.zscored_mse)) if self.zscored_mse else float("nan"),
            "pcc": float(np.mean(pcc)) if pcc else float("nan"),
            "amplitude_ratio": median(self.amplitude_ratio),
            "seam_ratio": median(self.seam_ratio),
            "band_nmse": {band: _ratio(self.band_error[band], self.band_energy[band]) for band in BANDS},
        }


# ----------------------------------------------------------------------------------------------------
# Codebook usage
# ----------------------------------------------------------------------------------------------------


def code_histogram(codes: Any, codebook_size: int, patch_mask: Any = None) -> np.ndarray:
    """Count codes per (scale, stage).

    Args:
        codes: [B, S, K, C, A] integer codes.
        codebook_size: n, the number of codes per stage.
        patch_mask: optional [B, C, A] bool, True = real patch (padding patches are not counted).

    Returns:
        int64 counts [S, K, n].
    """
    codes = torch.as_tensor(codes).detach().cpu().long()
    batch, scales, stages, channels, patches = codes.shape
    flat = codes.permute(1, 2, 0, 3, 4).reshape(scales, stages, -1)  # [S, K, B*C*A]
    if patch_mask is not None:
        keep = torch.as_tensor(patch_mask).detach().cpu().bool().reshape(-1)
        flat = flat[:, :, keep]
    histogram = np.zeros((scales, stages, codebook_size), dtype=np.int64)
    for s in range(scales):
        for k in range(stages):
            histogram[s, k] = torch.bincount(flat[s, k], minlength=codebook_size).numpy()
    return histogram


def codebook_usage(histogram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Code histogram [..., n] -> (usage, perplexity), each [...].

    usage: fraction of the n codes used at least once. perplexity: exp(entropy in nats) of the code
    distribution (1 = one code, n = all codes equally often).
    """
    histogram = np.asarray(histogram, dtype=np.float64)
    usage = (histogram > 0).mean(axis=-1)
    probabilities = histogram / np.maximum(histogram.sum(axis=-1, keepdims=True), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0).sum(axis=-1)
    return usage, np.exp(entropy)


# ----------------------------------------------------------------------------------------------------
# Reference codec: block DCT + uniform quantiser + ideal entropy coder
# ----------------------------------------------------------------------------------------------------


def _self_information(symbols: np.ndarray) -> np.ndarray:
    """-log2 p(symbol) [N, B] where p is the empirical distribution of each column of `symbols` [N, B]."""
    rows = symbols.shape[0]
    shifted = symbols - symbols.min(axis=0)  # >= 0 per column
    span = shifted.max(axis=0) + 1
    keys = shifted + np.concatenate(([0], np.cumsum(span)[:-1]))  # one key per (column, value)
    total = int(span.sum())
    if total <= 8 * keys.size:  # small alphabets: counting is cheaper than sorting
        count = np.bincount(keys.ravel(), minlength=total)[keys]
    else:
        _, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
        count = counts[inverse].reshape(keys.shape)
    return -np.log2(count / rows)


class DCTCodec:
    """The reference transform codec, fitted to a set of windows.

    Every channel of every window is cut into blocks of `block_size` samples (the last block zero-padded),
    transformed by an orthonormal DCT-II and quantised as round(c / step). The rate is that of an ideal
    entropy coder whose symbol distribution is estimated on this set, one distribution per DCT
    coefficient index (`block_size` of them): bits = sum of -log2 p(symbol). Tables are not charged.

    Args:
        signals: real samples of each window, [C, T_w] microvolts (or rows / `Window`s: padding is cut).
        block_size: samples per DCT block.
        sampling_rate: Hz, to turn samples into seconds.
    """

    def __init__(self, signals: Iterable[Any], block_size: int = BLOCK_SIZE, sampling_rate: float = SAMPLING_RATE):
        self.block_size = block_size
        self.sampling_rate = sampling_rate
        self.shapes: list[tuple[int, int]] = []  # (C, T_w) of every window
        blocks = []
        for item in signals:
            x = np.asarray(as_window(item).real, dtype=np.float64)
            channels, samples = x.shape
            padded = np.pad(x, ((0, 0), (0, -samples % block_size)))
            blocks.append(dct(padded.reshape(channels, -1, block_size), type=2, norm="ortho", axis=-1)
                          .reshape(-1, block_size))
            self.shapes.append((channels, samples))
        if not blocks:
            raise ValueError("DCTCodec needs at least one window")
        self.coefficients = np.concatenate(blocks)  # [rows, block_size], rows = sum of C_w x blocks_w
        rows_per_window = [len(b) for b in blocks]
        self.window_of_row = np.repeat(np.arange(len(blocks)), rows_per_window)
        self.row_offsets = np.concatenate(([0], np.cumsum(rows_per_window)))
        self.channel_seconds = np.array([c * t / sampling_rate for c, t in self.shapes])
        self._rates: dict[float, float] = {}

    def symbols(self, step: float) -> np.ndarray:
        """Quantised DCT coefficients round(c / step), int64 [rows, block_size]."""
        if not step > 0:
            raise ValueError(f"step must be > 0, got {step}")
        return np.rint(self.coefficients / step).astype(np.int64)

    def window_bits(self, step: float) -> np.ndarray:
        """Bits spent on each window [W] at quantiser step `step` (µV)."""
        row_bits = _self_information(self.symbols(step)).sum(axis=1)
        return np.bincount(self.window_of_row, weights=row_bits, minlength=len(self.shapes))

    def rate(self, step: float) -> float:
        """Bits per channel-second at `step`: mean over windows of (window bits / window channel-seconds)."""
        if step not in self._rates:
            self._rates[step] = float(np.mean(self.window_bits(step) / self.channel_seconds))
        return self._rates[step]

    def reconstruct(self, step: float) -> list[np.ndarray]:
        """Decoded windows at `step`: one [C, T_w] float64 µV array per window (real samples only)."""
        decoded = idct(self.symbols(step) * step, type=2, norm="ortho", axis=-1)
        windows = []
        for w, (channels, samples) in enumerate(self.shapes):
            rows = decoded[self.row_offsets[w]:self.row_offsets[w + 1]]
            windows.append(rows.reshape(channels, -1)[:, :samples])
        return windows

    def step_for_rate(self, target: float, rel_tol: float = 1e-3, max_iter: int = 60) -> float:
        """The quantiser step whose rate is closest to `target` bits/channel-second (bisection on log step).

        The empirical entropy saturates at log2(number of blocks) bits per coefficient, so very high targets
        on small sets are out of reach: then the finest step tried is returned, with a warning.
        """
        if not target > 0:
            raise ValueError(f"target rate must be > 0 bits per channel-second, got {target}")
        scale = float(np.sqrt(np.mean(self.coefficients ** 2))) or 1.0
        fine, coarse = scale, scale  # rate(fine) >= target >= rate(coarse); rate falls as step grows
        for _ in range(40):
            if self.rate(fine) >= target:
                break
            fine /= 4
        else:
            warnings.warn(f"DCT codec cannot reach {target:.1f} bits/ch-s on this set (max ~{self.rate(fine):.1f})")
        for _ in range(40):
            if self.rate(coarse) <= target:
                break
            coarse *= 4
        best = min((fine, coarse), key=lambda s: abs(self.rate(s) - target))
        for _ in range(max_iter):
            if abs(self.rate(best) - target) <= rel_tol * target:
                break
            middle = math.sqrt(fine * coarse)
            if self.rate(middle) > target:
                fine = middle
            else:
                coarse = middle
            best = min((best, middle), key=lambda s: abs(self.rate(s) - target))
        return best

    def evaluate(self, step: float, originals: Sequence[Any] | None = None) -> dict[str, Any]:
        """Metrics at `step`: step (µV), bits_per_channel_second, zscored_mse, pcc, band_nmse.

        `originals` ([C, T_w] real samples of the windows the codec was built on) are rebuilt from the
        coefficients when not given (the DCT is orthonormal, so the inverse is exact to rounding).
        """
        if originals is None:
            originals = [idct(self.coefficients[a:b], norm="ortho", axis=-1).reshape(c, -1)[:, :t]
                         for a, b, (c, t) in zip(self.row_offsets[:-1], self.row_offsets[1:], self.shapes)]
        scores = FidelityAccumulator(self.sampling_rate, self.block_size)
        for original, reconstruction in zip(originals, self.reconstruct(step)):
            scores.add(as_window(original).real, reconstruction)
        return {"step": float(step), "bits_per_channel_second": self.rate(step), **scores.summary()}


def dct_codec(x: Any, step: float, valid_samples: int | None = None,
              block_size: int = BLOCK_SIZE) -> tuple[np.ndarray, float]:
    """Code one window with the reference codec, its symbol distributions estimated on this window alone.

    Args:
        x: [C, T] microvolts.
        step: quantiser step (µV in the orthonormal DCT domain).
        valid_samples: real samples per channel (the rest is padding: not coded, returned as zeros).

    Returns:
        (reconstruction [C, T] µV, bits spent on the window). Use `DCTCodec` to share the symbol
        distributions across a whole evaluation set, as `dct_at_rate` does.
    """
    x = np.asarray(x, dtype=np.float64)
    real = _real_part(x, valid_samples)
    codec = DCTCodec([real], block_size=block_size)
    reconstruction = np.zeros_like(x)
    reconstruction[:, : real.shape[1]] = codec.reconstruct(step)[0]
    return reconstruction, float(codec.window_bits(step)[0])


def dct_at_rate(windows: Iterable[Any], target_bits_per_channel_second: float,
                codec: DCTCodec | None = None) -> dict[str, Any]:
    """Reference-codec metrics at the step reaching `target_bits_per_channel_second` on `windows`.

    Args:
        windows: rows, `Window`s or [C, T] arrays (µV).
        codec: a `DCTCodec` already built on these windows (saves recomputing the DCT).

    Returns:
        dict with step, bits_per_channel_second, zscored_mse, pcc and band_nmse.
    """
    windows = load_windows(windows)
    codec = codec or DCTCodec(windows)
    return codec.evaluate(codec.step_for_rate(target_bits_per_channel_second), [w.real for w in windows])


def dct_rate_distortion(windows: Iterable[Any], steps: Sequence[float],
                        codec: DCTCodec | None = None) -> list[dict[str, float]]:
    """Rate-distortion points of the reference codec: one dict per step with step (µV),
    bits_per_channel_second and zscored_mse."""
    windows = load_windows(windows)
    codec = codec or DCTCodec(windows)
    points = []
    for step in steps:
        mse = [zscored_mse(w.real, y) for w, y in zip(windows, codec.reconstruct(step))]
        points.append({"step": float(step), "bits_per_channel_second": codec.rate(step),
                       "zscored_mse": float(np.mean(mse))})
    return points


# ----------------------------------------------------------------------------------------------------
# The tokenizer
# ----------------------------------------------------------------------------------------------------


def tokenizer_bits_per_channel_second(config, num_quantizers: int, num_channels: int, valid_samples: int) -> float:
    """Bits per real channel-second the tokenizer spends on one window, side information included.

    Only patches holding real samples are counted (padding patches need not be sent); the bits of a
    partly real last patch are charged to the real seconds.
    """
    patches = math.ceil(valid_samples / config.patch_size)
    per_channel_second = config.bits_per_channel_second(num_quantizers=num_quantizers, num_channels=num_channels,
                                                        num_patches=patches)
    window_bits = per_channel_second * num_channels * patches * config.patch_size / config.sampling_rate
    return window_bits / (num_channels * valid_samples / config.sampling_rate)


def _encode_batch(model, batch: list[Window]):
    """Encode a batch of equal-shape windows with all stages; returns the encoder output."""
    values = torch.from_numpy(np.stack([w.input_values for w in batch]))
    padding_mask = None
    if any(w.valid_samples < w.input_values.shape[1] for w in batch):
        padding_mask = torch.zeros(values.shape, dtype=torch.long)
        for i, window in enumerate(batch):
            padding_mask[i, :, : window.valid_samples] = 1
    return model.encode(values, [w.channel_names for w in batch], padding_mask=padding_mask)


def _decode_stages(model, encoded, batch: list[Window], num_quantizers: int) -> np.ndarray:
    """Decode the first `num_quantizers` stages of `encoded` -> [B, C, T] float64 µV.

    Residual quantisation is greedy stage by stage, so encoding with k stages gives the first k stages of
    the full codes: one encode serves every k.
    """
    reconstruction = model.decode(
        encoded.codes[:, :, :num_quantizers], [w.channel_names for w in batch],
        log_amplitude_mean=encoded.log_amplitude_mean, log_amplitude_std=encoded.log_amplitude_std,
        scale_codes=encoded.scale_codes, patch_mask=encoded.patch_mask,
    )
    return reconstruction.detach().float().cpu().numpy().astype(np.float64)


class _EvalMode:
    """Run the model in eval mode (a training-mode quantizer would update its codebooks), then restore."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def reconstruct_windows(model, windows: Sequence[Window], batch_size: int = 16,
                        num_quantizers: int | None = None) -> list[np.ndarray]:
    """Tokenizer reconstructions [C, T] (µV) of `windows`, with the first `num_quantizers` stages (default all)."""
    k = num_quantizers or model.config.num_quantizers
    out = []
    with _EvalMode(model):
        for batch in shape_batches(windows, batch_size):
            out.extend(_decode_stages(model, _encode_batch(model, batch), batch, k))
    return out


def evaluate_tokenizer(model, rows: Iterable[Any], batch_size: int = 16, max_windows: int | None = None,
                       progress: bool = True, dct_rates: Sequence[float] | None = None) -> dict[str, Any]:
    """Fidelity, rate and codebook use of a NeuroRVQ tokenizer on prepared windows, next to a DCT codec.

    Args:
        model: a `NeuroRVQTokenizer` (run in eval mode; its training mode is restored afterwards).
        rows: dataset rows (`datasets.Dataset`, numpy-formatted or not, or a list of dicts) with
            `input_values` [C][T] µV at the model's rate, `valid_samples` and `channel_names`.
        batch_size: windows per model call (consecutive windows of equal shape are batched).
        max_windows: evaluate only the first windows.
        progress: show a tqdm bar.
        dct_rates: bits/channel-second of the DCT rate-distortion points (default: the tokenizer's rates
            for k = 1..K stages, so both curves share their rates).

    Returns:
        JSON-serialisable dict:
        - `num_windows`, `num_channel_seconds`, `num_quantizers` (K), `num_scales` (S), `codebook_size`;
        - at K stages: `bits_per_channel_second` (mean over windows, side information included),
          `zscored_mse`, `pcc`, `band_nmse` {band: NMSE}, `codebook_usage` and `codebook_perplexity`
          ([S][K] lists);
        - `amplitude_ratio`, `seam_ratio` of the reconstructions, and `original_seam_ratio` (the input's own);
        - `rate_distortion`: for k = 1..K, {num_quantizers, bits_per_channel_second, zscored_mse};
        - `dct`: the reference codec at the tokenizer's full rate (step, bits_per_channel_second,
          zscored_mse, pcc, band_nmse);
        - `dct_rate_distortion`: reference-codec {step, bits_per_channel_second, zscored_mse} at `dct_rates`.
    """
    config = model.config
    windows = load_windows(rows, max_windows)
    if not windows:
        raise ValueError("no window to evaluate")
    stages, scales = config.num_quantizers, config.num_scales
    full = FidelityAccumulator(config.sampling_rate, config.patch_size)
    stage_mse: list[list[float]] = [[] for _ in range(stages)]
    stage_bits: list[list[float]] = [[] for _ in range(stages)]
    histogram = np.zeros((scales, stages, config.codebook_size), dtype=np.int64)

    with _EvalMode(model), tqdm(total=len(windows), desc="evaluating tokenizer", unit="window",
                                disable=not progress) as bar:
        for batch in shape_batches(windows, batch_size):
            encoded = _encode_batch(model, batch)
            histogram += code_histogram(encoded.codes, config.codebook_size, encoded.patch_mask)
            for k in range(1, stages + 1):
                reconstructions = _decode_stages(model, encoded, batch, k)
                for window, reconstruction in zip(batch, reconstructions):
                    valid, channels = window.valid_samples, window.input_values.shape[0]
                    stage_mse[k - 1].append(zscored_mse(window.input_values, reconstruction, valid))
                    stage_bits[k - 1].append(tokenizer_bits_per_channel_second(config, k, channels, valid))
                    if k == stages:
                        full.add(window.input_values, reconstruction, valid)
            bar.update(len(batch))

    usage, perplexity = codebook_usage(histogram)
    rate_distortion = [
        {"num_quantizers": k + 1, "bits_per_channel_second": float(np.mean(stage_bits[k])),
         "zscored_mse": float(np.mean(stage_mse[k]))}
        for k in range(stages)
    ]
    full_rate = rate_distortion[-1]["bits_per_channel_second"]

    codec = DCTCodec(windows, block_size=config.patch_size, sampling_rate=config.sampling_rate)
    originals = [w.real for w in windows]
    rates = list(dct_rates) if dct_rates is not None else [p["bits_per_channel_second"] for p in rate_distortion]
    dct_points = dct_rate_distortion(windows, [codec.step_for_rate(r) for r in rates], codec=codec)
    return {
        "num_windows": len(windows),
        "num_channel_seconds": float(codec.channel_seconds.sum()),
        "num_quantizers": stages,
        "num_scales": scales,
        "codebook_size": config.codebook_size,
        "bits_per_channel_second": full_rate,
        **full.summary(),
        "codebook_usage": usage.tolist(),
        "codebook_perplexity": perplexity.tolist(),
        "original_seam_ratio": float(np.nanmedian([seam_ratio(x, config.patch_size) for x in originals])),
        "rate_distortion": rate_distortion,
        "dct": codec.evaluate(codec.step_for_rate(full_rate), originals),
        "dct_rate_distortion": dct_points,
    }


# ----------------------------------------------------------------------------------------------------
# Figure and table
# ----------------------------------------------------------------------------------------------------


def _mean_psd(signals: Sequence[np.ndarray], sampling_rate: float, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD (µV^2/Hz) averaged over channels and windows: (frequencies, psd)."""
    psds = []
    for x in signals:
        frequencies, psd = scipy_signal.welch(x, fs=sampling_rate, nperseg=nperseg, axis=-1)
        psds.append(psd.mean(axis=0))
    return frequencies, np.mean(psds, axis=0)


def plot_evaluation(model, rows: Iterable[Any], results: dict[str, Any], path: str | Path,
                    num_windows: int = 8, num_channels: int = 4, batch_size: int = 16) -> Path:
    """Write one PNG summarising an evaluation and return its path.

    Panels: (a) original vs tokenizer reconstruction (K stages) of up to `num_channels` channels of the
    first window; (b) Welch PSD, mean over channels of the first `num_windows` windows, of the original,
    the reconstruction and the DCT codec at the tokenizer's rate (`results["dct"]["step"]`); (c) z-scored
    MSE against bits per channel-second, tokenizer stages 1..K and DCT, log-scale MSE.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    config = model.config
    fs = config.sampling_rate
    windows = load_windows(rows, num_windows)
    if not windows:
        raise ValueError("no window to plot")
    originals = [w.real.astype(np.float64) for w in windows]
    tokenized = [y[:, : w.valid_samples] for w, y in zip(windows, reconstruct_windows(model, windows, batch_size))]
    dct_decoded = DCTCodec(windows, block_size=config.patch_size, sampling_rate=fs).reconstruct(results["dct"]["step"])

    figure = Figure(figsize=(15, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    traces, spectra, curves = figure.subplots(1, 3, width_ratios=[1.4, 1, 1])

    # (a) stacked traces, one offset per channel
    original, reconstruction = originals[0], tokenized[0]
    time = np.arange(original.shape[1]) / fs
    shown = min(num_channels, original.shape[0])
    offset = 4 * float(np.std(original[:shown])) or 1.0
    names = windows[0].channel_names or [str(c) for c in range(original.shape[0])]
    for c in range(shown):
        traces.plot(time, original[c] - c * offset, color="black", lw=0.8, label="original" if c == 0 else None)
        traces.plot(time, reconstruction[c] - c * offset, color="tab:red", lw=0.8, alpha=0.8,
                    label=f"NeuroRVQ (K={config.num_quantizers})" if c == 0 else None)
    traces.set_yticks([-c * offset for c in range(shown)], names[:shown])
    traces.set_xlabel("time (s)")
    traces.set_title("(a) original vs reconstruction")
    traces.legend(loc="upper right", fontsize=8)

    # (b) PSDs on a common frequency grid (segments no longer than the shortest window)
    nperseg = min(2 * fs, min(x.shape[1] for x in originals))
    dct_rate = results["dct"]["bits_per_channel_second"]
    for signals, label, color in ((originals, "original", "black"),
                                  (tokenized, f"NeuroRVQ ({results['bits_per_channel_second']:.0f} b/ch-s)", "tab:red"),
                                  (dct_decoded, f"DCT ({dct_rate:.0f} b/ch-s)", "tab:blue")):
        frequencies, psd = _mean_psd(signals, fs, nperseg)
        spectra.semilogy(frequencies, psd, color=color, lw=1, label=label)
    spectra.set_xlim(0, fs / 2)
    spectra.set_xlabel("frequency (Hz)")
    spectra.set_ylabel("PSD (µV²/Hz)")
    spectra.set_title("(b) power spectral density")
    spectra.legend(fontsize=8)

    # (c) rate-distortion curves
    tokenizer_curve = results["rate_distortion"]
    curves.plot([p["bits_per_channel_second"] for p in tokenizer_curve], [p["zscored_mse"] for p in tokenizer_curve],
                "o-", color="tab:red", label="NeuroRVQ, stages 1..K")
    dct_curve = sorted(results["dct_rate_distortion"], key=lambda p: p["bits_per_channel_second"])
    curves.plot([p["bits_per_channel_second"] for p in dct_curve], [p["zscored_mse"] for p in dct_curve],
                "s--", color="tab:blue", label="DCT + ideal entropy coder")
    curves.set_yscale("log")
    curves.set_xlabel("bits per channel-second")
    curves.set_ylabel("z-scored MSE")
    curves.set_title("(c) rate-distortion")
    curves.grid(True, which="both", alpha=0.3)
    curves.legend(fontsize=8)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def format_table(results: dict[str, Any]) -> str:
    """A markdown table of the tokenizer (K stages) and the DCT codec at the same rate:
    bits/ch-s, z-scored MSE, PCC and band NMSE."""
    header = ["codec", "bits/ch-s", "z-MSE", "PCC", "amplitude ratio", "seam ratio"] + [f"{band} NMSE" for band in BANDS]
    rows = [(f"NeuroRVQ (K={results['num_quantizers']})", results), ("DCT + ideal entropy coder", results["dct"])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name, row in rows:
        cells = [name, f"{row['bits_per_channel_second']:.1f}", f"{row['zscored_mse']:.4f}", f"{row['pcc']:.3f}",
                 f"{row.get('amplitude_ratio', float('nan')):.3f}", f"{row.get('seam_ratio', float('nan')):.2f}"]
        cells += [f"{row['band_nmse'][band]:.3f}" for band in BANDS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "BANDS",
    "DCTCodec",
    "FidelityAccumulator",
    "Window",
    "as_window",
    "band_errors",
    "band_nmse",
    "amplitude_ratio",
    "band_pass",
    "code_histogram",
    "codebook_usage",
    "dct_at_rate",
    "dct_codec",
    "dct_rate_distortion",
    "evaluate_tokenizer",
    "format_table",
    "load_windows",
    "pearson_correlation",
    "plot_evaluation",
    "reconstruct_windows",
    "seam_ratio",
    "shape_batches",
    "tokenizer_bits_per_channel_second",
    "zscore",
    "zscored_mse",
]
