"""Descriptive measurements of EEG for the realism report: spectra, band powers, correlations, covariances, spreads,
slopes, seams, and how a set's profile compares with the reference's; the order drift of a generator.

Inputs are `[C, T]` items (or `[N, C, T]` windows) in microvolts at `sampling_rate` Hz; powers are in dB re 1 µV^2
(Welch PSD with 1-s Hann segments, so 1 Hz bins), bands are `BANDS` ([low, high) Hz). Imports no model.

- one signal: `welch_psd`, `band_powers`, `spectral_slope`, `mean_abs_correlation`, `total_power_db`;
- a set of windows: `_measure` computes every per-window quantity once (`_Measurements`), `_profile` averages
  them over any subset of windows, `_compare` / `_reference_values` give the descriptive rows of the report;
- `order_drift`: how much of a channel's power comes from its place in the generation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import signal as scipy_signal

from ..tokenizer.metrics import BANDS, band_pass, seam_ratio  # numpy/scipy only, no model
from .realism_data import (FLAT_STD, SAMPLING_RATE, _as_items, _check_channel_names, _check_rate, _jsonable,
                           _resample, _WindowSet, as_signal, cut_windows)

BROADBAND = (1.0, 40.0)  # Hz: covariance and correlation band
TOTAL_BAND = (1.0, 45.0)  # Hz: total power (spreads, order drift)
SLOPE_RANGE = (2.0, 40.0)  # Hz: range of the log-log spectral fit
POWER_FLOOR = 1e-20  # µV^2: keeps the log of a flat channel finite


# ----------------------------------------------------------------------------------------------------
# Spectra of one signal
# ----------------------------------------------------------------------------------------------------


def welch_psd(x: np.ndarray, sampling_rate: float = SAMPLING_RATE, nperseg: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD along the last axis (Hann, 1-s segments = 1 Hz bins by default, capped by T):
    (frequencies [F] Hz, psd [..., F] µV^2/Hz)."""
    nperseg = int(round(sampling_rate)) if nperseg is None else nperseg
    return scipy_signal.welch(x, fs=sampling_rate, nperseg=min(nperseg, x.shape[-1]), axis=-1)


def band_powers_from_psd(frequencies: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Power per band of `BANDS` in µV^2 (PSD summed over [low, high) bins x bin width): `[..., 5]`."""
    width = frequencies[1] - frequencies[0]
    powers = []
    for band, (low, high) in BANDS.items():
        in_band = (frequencies >= low) & (frequencies < high)
        if not in_band.any():
            raise ValueError(f"signal too short to resolve the {band} band ({low}-{high} Hz) with "
                             f"{width:.2f} Hz Welch bins")
        powers.append(psd[..., in_band].sum(-1) * width)
    return np.stack(powers, -1)


def slope_from_psd(frequencies: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Least-squares slope of log10 psd against log10 frequency over `SLOPE_RANGE`: `[...]`."""
    in_range = (frequencies >= SLOPE_RANGE[0]) & (frequencies <= SLOPE_RANGE[1])
    if in_range.sum() < 2:
        raise ValueError("signal too short for a spectral slope over 2-40 Hz")
    log_f = np.log10(frequencies[in_range])
    log_p = np.log10(np.maximum(psd[..., in_range], POWER_FLOOR))
    centred = log_f - log_f.mean()
    return (log_p - log_p.mean(-1, keepdims=True)) @ centred / (centred @ centred)


def band_powers(x: Any, sampling_rate: float = SAMPLING_RATE) -> np.ndarray:
    """Band powers of every channel of `x` (`[C, T]` µV): `[C, 5]` in dB re 1 µV^2, bands `BANDS`, Welch PSD."""
    frequencies, psd = welch_psd(as_signal(x), sampling_rate)
    return 10 * np.log10(np.maximum(band_powers_from_psd(frequencies, psd), POWER_FLOOR))


def spectral_slope(x: Any, sampling_rate: float = SAMPLING_RATE) -> np.ndarray:
    """Slope of the log-log Welch PSD over 2-40 Hz of every channel of `x` (`[C, T]` µV): `[C]` (pink 1/f -> -1)."""
    frequencies, psd = welch_psd(as_signal(x), sampling_rate)
    return slope_from_psd(frequencies, psd)


def mean_abs_correlation(x: Any) -> float:
    """Mean |Pearson r| over the channel pairs of one item `[C, T]` (NaN with fewer than two live channels)."""
    x = as_signal(x)
    x = x[x.std(-1) > FLAT_STD]
    if len(x) < 2:
        return float("nan")
    return float(np.abs(np.corrcoef(x)[np.triu_indices(len(x), 1)]).mean())


def total_power_db(x: np.ndarray, sampling_rate: float = SAMPLING_RATE) -> np.ndarray:
    """Power of the 1-45 Hz band-passed signal (mean square, dB re 1 µV^2) per channel: `[..., C, T]` -> `[..., C]`."""
    filtered = band_pass(np.asarray(x, dtype=np.float64), *TOTAL_BAND, sampling_rate)
    return 10 * np.log10(np.maximum((filtered ** 2).mean(-1), POWER_FLOOR))


# ----------------------------------------------------------------------------------------------------
# Per-window measurements (computed once per set, aggregated over any subset of windows)
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Measurements:
    """Per-window quantities of a `_WindowSet` (N windows, C channels, B bands, P channel pairs)."""

    band_db: np.ndarray  # [N, C, B] log band power, dB re 1 µV^2 (Welch)
    slope: np.ndarray  # [N, C] 2-40 Hz log-log slope
    frequencies: np.ndarray  # [F] Hz
    psd: np.ndarray  # [N, F] channel-mean PSD, µV^2/Hz
    total_db: np.ndarray  # [N, C] 1-45 Hz power, dB
    piece_db: np.ndarray  # [N, S] mean over channels of the 1-45 Hz power of each 1-s piece, dB
    seam: np.ndarray  # [N] seam ratio at 1-s edges
    correlation: dict[str, np.ndarray] = field(default_factory=dict)  # band -> [N, P] Pearson r of the pairs
    covariance: dict[str, np.ndarray] = field(default_factory=dict)  # band -> [N, C, C] OAS covariance, µV^2
    resampled: np.ndarray | None = None  # [N, C, L'] float32 windows at `resample_rate` (a classifier's input)


def _filter_bands() -> dict[str, tuple[float, float]]:
    """Named pass bands the measurements filter with: broadband (1-40 Hz), the EEG bands, total (1-45 Hz)."""
    return {"broadband": BROADBAND, **BANDS, "total": TOTAL_BAND}


def _pair_correlations(windows: np.ndarray) -> np.ndarray:
    """Pearson r of every channel pair of every window: [N, C, L] -> [N, C (C - 1) / 2] (upper triangle)."""
    centred = windows - windows.mean(-1, keepdims=True)
    centred /= np.maximum(np.linalg.norm(centred, axis=-1, keepdims=True), 1e-12)
    r = centred @ centred.transpose(0, 2, 1)
    upper = np.triu_indices(windows.shape[1], 1)
    return r[:, upper[0], upper[1]].astype(np.float32)


def _measure(data: _WindowSet, sampling_rate: float, length: int, covariance_bands: Sequence[str] = (),
             resample_rate: float | None = None, classified: np.ndarray | None = None) -> _Measurements:
    """Every per-window quantity of `data` (`length` samples per window at `sampling_rate` Hz); the ones only a
    classifier reads (covariances of `covariance_bands`, the windows resampled to `resample_rate` Hz) only for the
    windows `classified` (indices; default all), the rest left zero."""
    from pyriemann.estimation import Covariances

    windows = data.windows.astype(np.float64)
    classified = np.arange(len(windows)) if classified is None else classified
    frequencies, psd = welch_psd(windows, sampling_rate)  # [N, C, F]
    band_db = 10 * np.log10(np.maximum(band_powers_from_psd(frequencies, psd), POWER_FLOOR))
    patch = int(round(sampling_rate))
    out = _Measurements(band_db=band_db.astype(np.float32), slope=slope_from_psd(frequencies, psd),
                        frequencies=frequencies, psd=psd.mean(1), total_db=np.zeros(0), piece_db=np.zeros(0),
                        seam=np.array([seam_ratio(w, patch) for w in windows]))
    for band, (low, high) in _filter_bands().items():
        # filter whole items, then cut: no filter transient at every window edge
        filtered, _ = cut_windows([band_pass(x, low, high, sampling_rate) for x in data.items], length)
        if band == "total":
            out.total_db = 10 * np.log10(np.maximum((filtered ** 2).mean(-1), POWER_FLOOR))
            pieces = filtered[..., : length // patch * patch].reshape(*filtered.shape[:2], -1, patch)
            out.piece_db = (10 * np.log10(np.maximum((pieces ** 2).mean(-1), POWER_FLOOR))).mean(1)
            continue
        out.correlation[band] = _pair_correlations(filtered)
        if band in covariance_bands:
            out.covariance[band] = np.zeros((len(windows), windows.shape[1], windows.shape[1]))
            out.covariance[band][classified] = Covariances(estimator="oas").transform(filtered[classified])
    if resample_rate is not None:
        resampled = _resample(windows[classified], sampling_rate, resample_rate)
        out.resampled = np.zeros((len(windows), *resampled.shape[1:]), dtype=np.float32)
        out.resampled[classified] = resampled
    return out


# ----------------------------------------------------------------------------------------------------
# Descriptive comparisons
# ----------------------------------------------------------------------------------------------------


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denominator) if denominator > 0 else float("nan")


def _profile(m: _Measurements, index: np.ndarray) -> dict[str, Any]:
    """Means of one (subset of a) set: band dB [C, B], deviation profile [C, B], mean r per band [P], spreads, ..."""
    band_db = m.band_db[index].mean(0).astype(np.float64)
    return {"band_db": band_db, "deviation_db": band_db - band_db.mean(0),
            "correlation": {band: r[index].mean(0).astype(np.float64) for band, r in m.correlation.items()},
            "between_db": float(m.total_db[index].mean(1).std()),
            "within_db": float(m.piece_db[index].std(1).mean()),
            "slope": float(m.slope[index].mean()), "seam": float(np.nanmedian(m.seam[index])),
            "psd": m.psd[index].mean(0)}


def _compare(x: dict, ref: dict) -> dict[str, float]:
    """Descriptive figures of profile `x` against reference profile `ref` (keys: metric rows of the report)."""
    out = {}
    for b, band in enumerate(BANDS):
        out[f"band_db/{band}"] = float((x["band_db"][:, b] - ref["band_db"][:, b]).mean())
    for b, band in enumerate(BANDS):
        out[f"topography_r/{band}"] = _pearson(x["deviation_db"][:, b], ref["deviation_db"][:, b])
    for b, band in enumerate(BANDS):
        out[f"topography_max_db/{band}"] = float(np.abs(x["deviation_db"][:, b] - ref["deviation_db"][:, b]).max())
    for band in ref["correlation"]:
        out[f"correlation_error/{band}"] = float(np.abs(x["correlation"][band] - ref["correlation"][band]).mean())
    out["spread/between"] = x["between_db"] / ref["between_db"] if ref["between_db"] > 0 else float("nan")
    out["spread/within"] = x["within_db"] / ref["within_db"] if ref["within_db"] > 0 else float("nan")
    out["slope"] = x["slope"] - ref["slope"]
    out["seam"] = x["seam"]
    return out


def _reference_values(ref: dict) -> dict[str, float]:
    """Third column of the descriptive rows: what the reference itself measures (or a comparison's chance value)."""
    out = {}
    for b, band in enumerate(BANDS):
        out[f"band_db/{band}"] = float(ref["band_db"][:, b].mean())
        out[f"topography_r/{band}"] = 0.0  # unrelated maps
        out[f"topography_max_db/{band}"] = float(ref["deviation_db"][:, b].std())
    for band, r in ref["correlation"].items():
        out[f"correlation_error/{band}"] = float(np.abs(r).mean())
    out.update({"spread/between": ref["between_db"], "spread/within": ref["within_db"], "slope": ref["slope"],
                "seam": ref["seam"]})
    return out


# ----------------------------------------------------------------------------------------------------
# Order drift: does a channel's power depend on when the generator produced it?
# ----------------------------------------------------------------------------------------------------


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x.astype(np.float64), y, 1)[0])


def _generation_index(order: Sequence[str], montage: list[str], name: str) -> np.ndarray:
    """Position in the generation `order` of each channel of `montage`: `[C]`."""
    order = [str(n).lower() for n in order]
    if sorted(order) != sorted(montage):
        raise ValueError(f"{name} must hold exactly the channels of channel_names, got {order}")
    return np.array([order.index(n) for n in montage])


def _channel_power(samples: Any, index: np.ndarray, rate: float, name: str) -> np.ndarray:
    """Mean over samples of each channel's 1-45 Hz power (dB) in montage order; row `index[c]` of every sample is
    montage channel c."""
    items = _as_items(name, samples, len(index))
    return np.mean([total_power_db(x, rate) for x in items], 0)[index]


def order_drift(samples_a: Any, order_a: Sequence[str], samples_b: Any, order_b: Sequence[str],
                channel_names: Sequence[str], sampling_rate: float = SAMPLING_RATE, real: Any = None,
                real_groups: Sequence | None = None, repeats: int = 10, seed: int = 0) -> dict:
    """For a generator that can sample one montage in two channel orders: how much of a channel's power comes from
    its position in the generation order rather than from the electrode?

    Args:
        samples_a, samples_b: `[N, C, T]` µV (or lists of `[C, T]`); the rows of `samples_a` follow `order_a` (the
            generation order: row i was generated i-th), those of `samples_b` follow `order_b`.
        channel_names: the montage (its order is the electrode order of the outputs).
        real, real_groups: optional real EEG in `channel_names` order with a subject per item: its groups are split
            in halves, each treated as if generated in one of the orders, giving the floor (no order effect exists).

    Model: power_set(c) = electrode(c) + slope x index_set(c) (dB), one order-driven slope shared by both sets, fitted
    by least squares on the per-channel differences (power_a - power_b against index_a - index_b). When b is a's
    reversed order this equals (slope_a + slope_b) / 2 of each set regressed on its own generation index, and, when
    a is the montage order, (slope_a - slope_b) / 2 of both regressed on the montage index (`montage_slopes`).

    Returns (dB per channel step): `order_slope_db_per_channel`, `slopes_db_per_channel` {a, b} (each on its own
    generation index), `montage_slopes_db_per_channel` {a, b} (on the index in `channel_names`),
    `electrode_slope_db_per_channel` (slope of the electrode part on the `channel_names` index), `electrode_db`
    (the electrode part per channel, centred, dB), and with `real` the `floor`
    (`mean_abs_order_slope_db_per_channel` and `std` of |order slope| over random halves of the real groups).
    """
    montage = _check_channel_names(channel_names)
    rate = _check_rate(sampling_rate)
    index_a, index_b = _generation_index(order_a, montage, "order_a"), _generation_index(order_b, montage, "order_b")
    if np.array_equal(index_a, index_b):
        raise ValueError("order_a and order_b are the same order: the order effect cannot be told from the electrodes")
    power_a = _channel_power(samples_a, index_a, rate, "samples_a")
    power_b = _channel_power(samples_b, index_b, rate, "samples_b")
    slope, electrode = _order_fit(power_a, power_b, index_a, index_b)
    position = np.arange(len(montage))
    result = {"order_slope_db_per_channel": slope,
              "slopes_db_per_channel": {"a": _slope(index_a, power_a), "b": _slope(index_b, power_b)},
              "montage_slopes_db_per_channel": {"a": _slope(position, power_a), "b": _slope(position, power_b)},
              "electrode_slope_db_per_channel": _slope(position, electrode), "electrode_db": electrode.tolist(),
              "channel_names": montage}
    if real is not None:
        result["floor"] = _order_drift_floor(real, real_groups, montage, rate, index_a, index_b, int(repeats), seed)
    return _jsonable(result)


def _order_fit(power_a: np.ndarray, power_b: np.ndarray, index_a: np.ndarray, index_b: np.ndarray
               ) -> tuple[float, np.ndarray]:
    """Least-squares fit of power_set(c) = electrode(c) + slope x index_set(c) to two sets' channel powers (dB,
    `[C]` in montage order): (slope in dB per channel step, electrode part `[C]` centred, dB)."""
    step = (index_a - index_b).astype(np.float64)
    slope = float((power_a - power_b) @ step / (step @ step))
    electrode = ((power_a - slope * index_a) + (power_b - slope * index_b)) / 2
    return slope, electrode - electrode.mean()


def _order_drift_floor(real: Any, real_groups: Sequence | None, montage: list[str], rate: float, index_a: np.ndarray,
                       index_b: np.ndarray, repeats: int, seed: int) -> dict:
    """|order slope| of real EEG whose groups are split in random halves, each half taken as sampled in one of
    the orders: the electrode is the same, so any slope is noise. Mean and std over `repeats` halves."""
    items = _as_items("real", real, len(montage))
    groups = np.asarray([str(g) for g in (real_groups if real_groups is not None else range(len(items)))])
    names = np.unique(groups)
    if len(names) < 2:
        raise ValueError("real: the order-drift floor needs at least two groups")
    power = np.array([total_power_db(x, rate) for x in items])  # [N, C] in montage order
    floors = []
    for r in range(repeats):
        half = np.random.default_rng([seed, r]).permutation(names)[: len(names) // 2]
        in_half = np.isin(groups, half)
        floors.append(abs(_order_fit(power[in_half].mean(0), power[~in_half].mean(0), index_a, index_b)[0]))
    return {"mean_abs_order_slope_db_per_channel": float(np.mean(floors)), "std": float(np.std(floors))}


__all__ = ["BANDS", "POWER_FLOOR", "band_powers", "mean_abs_correlation", "order_drift", "spectral_slope",
           "total_power_db", "welch_psd"]
