"""The reference codec of the tokenizer evaluation: block DCT + uniform quantiser + ideal entropy coder.

Per channel, per one-second block, an orthonormal DCT-II, a uniform quantiser and an ideal entropy coder (empirical
entropy per DCT coefficient index, estimated on the evaluation set itself, so the code tables are free). Signals are
`[C, T]` microvolts; rate is in bits per channel-second of real signal, distortion in the metrics of
`tokenizer.metrics`.

Entry points: `DCTCodec` (fitted to a set of windows), `dct_codec` (one window), `dct_at_rate`, `dct_rate_distortion`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.fft import dct, idct

from .metrics import BLOCK_SIZE, SAMPLING_RATE, FidelityAccumulator, _real_part, zscored_mse
from .windows import as_window, load_windows


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


__all__ = ["DCTCodec", "dct_at_rate", "dct_codec", "dct_rate_distortion"]
