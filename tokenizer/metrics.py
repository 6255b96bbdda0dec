"""Reconstruction metrics that need no model: numpy / scipy on `[C, T]` arrays (code histograms read torch tensors).

Every signal here is EEG in **microvolts** at the model's sampling rate (200 Hz), as arrays `[C, T]` (channels x
samples). With `valid_samples`, only a window's first `valid_samples` samples of every channel count (the rest is
padding).

Per window, then aggregated over an evaluation set (`FidelityAccumulator`):

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
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from scipy import signal as scipy_signal

from .configuration_neurorvq import PATCH_SIZE, SAMPLING_RATE  # defaults where no model is at hand (200 Hz, 1 s)

BLOCK_SIZE = PATCH_SIZE  # samples per block by default: one second, like one model patch (seams; DCT blocks)
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


__all__ = [
    "BANDS",
    "BLOCK_SIZE",
    "FidelityAccumulator",
    "amplitude_ratio",
    "band_errors",
    "band_nmse",
    "band_pass",
    "code_histogram",
    "codebook_usage",
    "pearson_correlation",
    "seam_ratio",
    "zscore",
    "zscored_mse",
]
