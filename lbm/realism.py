"""How far is a set of synthetic EEG from real EEG? Two-sample tests and descriptive figures, each beside its floor.

Works on samples from any generator: the inputs are arrays of EEG in **microvolts** (`[N, C, T]`, or lists of
`[C, T]` arrays), their channel names, their sampling rate (Hz) and a group id per item. No model is involved.

How to read the numbers
-----------------------
Every row of `format_report` has three columns: **synthetic | floor | chance (or the reference's own value)**.

- *reference*: the real EEG (`real`), its windows grouped by subject (or recording).
- *synthetic*: the set under test, its windows grouped by draw (the sample they were cut from).
- *floor*: the same measurement with real EEG of **other subjects** (`other_real`) in place of the synthetic set.
  Without `other_real`, the reference subjects are split into two halves (by group, `repeats` times at random):
  the floor is half against half, and the synthetic set is compared with one half, i.e. with the same amount of
  real data. New real subjects differ from the reference too; the floor says by how much. A synthetic value at
  its floor is as close to the reference as real EEG of new people is; the distance beyond it is the generator's.
- *chance*: 0.5 for the classifiers (the two classes are balanced by subsampling the larger one).

**Two-sample classifiers** (C2ST) learn to tell the synthetic windows from reference windows and are scored on
held-out windows: 0.5 = indistinguishable, 1 = always told apart. Folds are **grouped** (scikit-learn
`StratifiedGroupKFold`): every window of a subject (or of a draw) is on one side of a split. With window-level
folds a subject's windows sit on both sides, and a classifier learns to recognise subjects, not realism: real EEG
of other subjects against the reference then scores 0.95-1.0 instead of ~0.6 (see `two_sample_test(grouped=False)`).
With few subjects the floor sits away from 0.5 either way: above it when the reference subjects happen to differ
from the others, below it because holding a subject out moves its class's training mean away from it (the
"anti-learning" of cross-validation with few groups: 0.3-0.4 with 12 subjects per side). Read each accuracy beside
its floor. A generator whose draws are many small groups is held to a slightly stricter standard than the floor
(its held-out draws pull its class mean less), so a synthetic accuracy at the floor is a strong result. Three
classifiers:

- `bandpower`: per-channel log band powers (Welch, dB) and every channel pair's Pearson r (1-40 Hz) ->
  standardised logistic regression;
- `covariance`: OAS spatial covariance (pyriemann) -> Riemannian tangent space -> logistic regression, 1-40 Hz
  (`covariance`) and per band (`covariance/alpha`, ...), the signal band-passed first;
- `learned`: a small ShallowConvNet-style network trained on the raw windows (100 Hz) for a fixed number of
  updates per fold, its own features: whatever the first two miss.

**Descriptive figures** (synthetic vs reference; floor = other real vs reference): band power difference (dB,
mean over channels); topography (per channel, its mean log band power minus the mean over channels): Pearson r of
the two maps (1 = same map, 0 = unrelated) and the largest per-channel difference (dB, with the channel); the
inter-channel correlation matrix error (mean |difference| of the mean correlation matrices over channel pairs, 1-40
Hz and per band; third column: the reference's mean |r|); between-window spread (std over windows of the mean log
power) and within-window spread (std over the 1-s pieces of a window), as ratios to the reference; the 2-40 Hz
log-log spectral slope difference; the seam ratio at 1-s patch edges (`seam_ratio`, real EEG ~1).

Entry points: `realism_report` -> `format_report` / `write_report` (JSON, markdown, figures of
`lbm.realism_plots`); `two_sample_test` for one classifier; `order_drift` for generators that can sample one
montage in two channel orders; `state_classification` / `tstr_trtr` for labelled (conditional) generators;
`load_eeg` to read recordings (MNE) or a prepared dataset into a set.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from scipy import signal as scipy_signal
from torch import nn

# pure helpers (numpy/scipy only; tokenizer.evaluation imports no model)
from ..tokenizer.evaluation import BANDS, band_pass, seam_ratio

SAMPLING_RATE = 200.0  # Hz, the rate of this project's EEG
BROADBAND = (1.0, 40.0)  # Hz: covariance and correlation band
TOTAL_BAND = (1.0, 45.0)  # Hz: total power (spreads, order drift)
SLOPE_RANGE = (2.0, 40.0)  # Hz: range of the log-log spectral fit
MIN_SAMPLING_RATE = 100.0  # Hz: the bands reach 45 Hz
LEARNED_RATE = 100.0  # Hz: the learned classifier sees 0-50 Hz, every band of the report, at a quarter of the cost
POWER_FLOOR = 1e-20  # µV^2: keeps the log of a flat channel finite
FLAT_STD = 1e-9  # µV: a channel this flat holds no EEG
CHANCE = 0.5
CLASSIFIERS = ("bandpower", "covariance", "learned")
CLASSIFIER_LABELS = {"bandpower": "C2ST band power + pair r (LR)", "covariance": "C2ST covariance 1-40 Hz (tangent LR)",
                     "learned": "C2ST learned (ShallowConvNet-style)"}


# ----------------------------------------------------------------------------------------------------
# Spectra of one signal
# ----------------------------------------------------------------------------------------------------


def as_signal(x: Any) -> np.ndarray:
    """An EEG item as float64 `[C, T]` (a 1-D signal becomes one channel)."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[-1] < 2:
        raise ValueError(f"an EEG item must be [C, T] with T >= 2, got shape {x.shape}")
    return x


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


def cut_windows(items: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every item `[C, T]` cut into non-overlapping windows of `length` samples from its start (a remainder is
    dropped). Returns (windows `[N, C, length]`, item index of each window `[N]`)."""
    windows, owners = [], []
    for index, item in enumerate(items):
        count = item.shape[-1] // length
        if count:
            windows.append(np.stack(np.split(item[:, : count * length], count, axis=-1)))
            owners.append(np.full(count, index))
    if not windows:
        channels = items[0].shape[0] if len(items) else 0
        return np.zeros((0, channels, length)), np.zeros(0, dtype=np.int64)
    return np.concatenate(windows), np.concatenate(owners)


# ----------------------------------------------------------------------------------------------------
# Inputs: checked sets of windows
# ----------------------------------------------------------------------------------------------------


def _check_rate(sampling_rate: Any) -> float:
    try:
        rate = float(sampling_rate)
    except (TypeError, ValueError):
        raise ValueError(f"sampling_rate must be a number (Hz), got {sampling_rate!r}") from None
    if not math.isfinite(rate) or rate < MIN_SAMPLING_RATE:
        raise ValueError(f"sampling_rate must be at least {MIN_SAMPLING_RATE:g} Hz (the bands reach 45 Hz), "
                         f"got {sampling_rate!r}; resample the EEG first")
    return rate


def _check_channel_names(channel_names: Sequence[str]) -> list[str]:
    if channel_names is None or isinstance(channel_names, str) or not len(channel_names):
        raise ValueError("channel_names must be a non-empty list of channel names (one per row of every item)")
    names = [str(n).lower() for n in channel_names]
    if len(set(names)) != len(names):
        raise ValueError(f"channel_names contain duplicates: {names}")
    if len(names) < 2:
        raise ValueError("the report needs at least two channels (covariance, correlations, topography)")
    return names


def _window_length(window_seconds: float, sampling_rate: float) -> int:
    if not (isinstance(window_seconds, (int, float)) and math.isfinite(window_seconds) and window_seconds >= 2):
        raise ValueError(f"window_seconds must be at least 2 s (Welch spectra with 1-s segments), "
                         f"got {window_seconds!r}")
    return int(round(window_seconds * sampling_rate))


def _as_items(name: str, signals: Any, num_channels: int) -> list[np.ndarray]:
    """`signals` ([N, C, T] array or a list of [C, T] arrays, µV) -> checked float64 items."""
    if signals is None:
        raise ValueError(f"{name}: no EEG given")
    if isinstance(signals, (np.ndarray, torch.Tensor)):
        array = np.asarray(signals.detach().cpu() if isinstance(signals, torch.Tensor) else signals)
        if array.ndim != 3:
            raise ValueError(f"{name}: an array must be [N, C, T] (items x channels x samples), "
                             f"got shape {array.shape}")
        signals = list(array)
    items = []
    for index, item in enumerate(signals):
        x = np.asarray(item.detach().cpu() if isinstance(item, torch.Tensor) else item, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"{name}: item {index} must be [C, T] (channels x samples), got shape {x.shape}")
        if x.shape[0] != num_channels:
            raise ValueError(f"{name}: item {index} has {x.shape[0]} channels but channel_names names {num_channels}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: item {index} holds NaN or infinite values")
        flat = np.flatnonzero(x.std(-1) <= FLAT_STD)
        if x.shape[-1] > 1 and len(flat):
            raise ValueError(f"{name}: item {index} has flat (constant) channel(s) at rows {flat.tolist()}: "
                             "no EEG there")
        items.append(x)
    if not items:
        raise ValueError(f"{name}: no EEG item given")
    return items


@dataclass
class _WindowSet:
    """One set cut into windows: `items` [C, T] µV, `windows` [N, C, L] float32, `groups` [N] (str), `owners` [N]."""

    name: str
    items: list[np.ndarray]
    windows: np.ndarray
    groups: np.ndarray
    owners: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def group_names(self) -> list[str]:
        return sorted(set(self.groups.tolist()))


def _window_set(name: str, signals: Any, groups: Sequence | None, num_channels: int, length: int,
                default_prefix: str | None) -> _WindowSet:
    items = _as_items(name, signals, num_channels)
    if groups is None:
        if default_prefix is None:
            raise ValueError(f"{name}: give a group id (subject or recording) per item")
        groups = [f"{default_prefix}{i}" for i in range(len(items))]
    groups = [str(g) for g in groups]
    if len(groups) != len(items):
        raise ValueError(f"{name}: {len(groups)} group ids for {len(items)} items")
    windows, owners = cut_windows(items, length)
    if not len(windows):
        longest = max(x.shape[-1] for x in items)
        raise ValueError(f"{name}: no item is as long as one window ({length} samples; the longest has {longest})")
    return _WindowSet(name, items, windows.astype(np.float32), np.asarray(groups, dtype=object)[owners], owners)


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
    learned_input: np.ndarray | None = None  # [N, C, L'] float32 windows at LEARNED_RATE


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


def _resample(windows: np.ndarray, rate: float, target: float) -> np.ndarray:
    """Polyphase resampling along time (anti-aliased), `rate` -> `target` Hz."""
    if rate == target:
        return windows
    ratio = Fraction(target / rate).limit_denominator(1000)
    return scipy_signal.resample_poly(windows, ratio.numerator, ratio.denominator, axis=-1)


def _measure(data: _WindowSet, sampling_rate: float, length: int, covariance_bands: Sequence[str] = (),
             learned: bool = False, classified: np.ndarray | None = None) -> _Measurements:
    """Every per-window quantity of `data`; the classifier-only ones (covariances, the learned classifier's input)
    only for the windows `classified` (indices; default all), the rest left zero."""
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
    if learned:
        resampled = _resample(windows[classified], sampling_rate, LEARNED_RATE)
        out.learned_input = np.zeros((len(windows), *resampled.shape[1:]), dtype=np.float32)
        out.learned_input[classified] = resampled
    return out


# ----------------------------------------------------------------------------------------------------
# Classifiers
# ----------------------------------------------------------------------------------------------------


class _ShallowConvNet(nn.Module):
    """ShallowConvNet-style (Schirrmeister et al. 2017) log band-power network: spatial filters across channels,
    a temporal filter bank per spatial filter, square, average pool, log, linear.

    The two linear convolutions run spatial-first (a 1x1 convolution over channels, then a depthwise temporal one),
    the order that keeps the cost independent of the channel count (64-channel EEG trains as fast as 19-channel).
    Input `[B, C, T]` (scaled EEG at `sampling_rate`), output logits `[B, 2]`.
    """

    def __init__(self, num_channels: int, num_samples: int, sampling_rate: float, spatial_filters: int = 16,
                 temporal_filters: int = 2):
        super().__init__()
        kernel = int(round(0.1 * sampling_rate)) | 1  # 0.1 s, as ShallowConvNet
        pool, stride = int(round(0.5 * sampling_rate)), int(round(0.25 * sampling_rate))
        features = spatial_filters * temporal_filters
        self.spatial = nn.Conv1d(num_channels, spatial_filters, 1, bias=False)
        self.temporal = nn.Conv1d(spatial_filters, features, kernel, groups=spatial_filters, bias=False)
        self.norm = nn.BatchNorm1d(features)
        self.pool = nn.AvgPool1d(pool, stride)
        self.dropout = nn.Dropout(0.5)
        positions = (num_samples - kernel + 1 - pool) // stride + 1
        if positions < 1:
            raise ValueError(f"windows of {num_samples} samples are too short for the learned classifier")
        self.head = nn.Linear(features * positions, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.temporal(self.spatial(x)))
        h = torch.log(self.pool(h.square()).clamp_min(1e-6))
        return self.head(self.dropout(h.flatten(1)))


class ShallowConvNetClassifier:
    """scikit-learn classifier around `_ShallowConvNet`: `fit(X [N, C, T], y)` makes `steps` optimizer updates on CPU
    (AdamW, shuffled mini-batches, class-weighted loss; a fixed number of updates, so a small training set is
    learned as well as a large one; seeded: the same data and seed give the same model),
    `predict(X)` -> labels.
    Inputs are divided by the training windows' std (one number: amplitude differences stay visible)."""

    def __init__(self, sampling_rate: float = LEARNED_RATE, steps: int = 100, batch_size: int = 32,
                 learning_rate: float = 3e-3, weight_decay: float = 1e-2, seed: int = 0):
        self.sampling_rate, self.steps, self.batch_size = sampling_rate, steps, batch_size
        self.learning_rate, self.weight_decay, self.seed = learning_rate, weight_decay, seed

    # the scikit-learn estimator protocol (`sklearn.base.clone`) without importing scikit-learn with this module
    def get_params(self, deep: bool = True) -> dict:
        return {"sampling_rate": self.sampling_rate, "steps": self.steps, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate, "weight_decay": self.weight_decay, "seed": self.seed}

    def set_params(self, **params) -> "ShallowConvNetClassifier":
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, X: np.ndarray, y: np.ndarray) -> "ShallowConvNetClassifier":
        X = np.asarray(X, dtype=np.float32)
        self.classes_, target = np.unique(y, return_inverse=True)
        self.scale_ = float(X.std()) or 1.0
        x, target = torch.from_numpy(X / self.scale_), torch.from_numpy(target)
        weight = torch.from_numpy(len(target) / (2.0 * np.bincount(target, minlength=2))).float()  # balanced classes
        with torch.random.fork_rng():  # seeded initialisation and dropout without touching the caller's RNG
            torch.manual_seed(self.seed)
            self.net_ = _ShallowConvNet(X.shape[1], X.shape[2], self.sampling_rate)
            optimizer = torch.optim.AdamW(self.net_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
            order = torch.Generator().manual_seed(self.seed)
            self.net_.train()
            step = 0
            while step < self.steps:  # epochs of shuffled mini-batches until `steps` updates
                for batch in torch.randperm(len(x), generator=order).split(self.batch_size):
                    if len(batch) < 2 or step >= self.steps:  # batch norm needs two windows
                        continue
                    loss = nn.functional.cross_entropy(self.net_(x[batch]), target[batch], weight=weight)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    step += 1
        self.net_.eval()
        return self

    @torch.no_grad()
    def predict(self, X: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(X, dtype=np.float32) / self.scale_)
        logits = torch.cat([self.net_(part) for part in x.split(256)])
        return self.classes_[logits.argmax(-1).numpy()]


def _estimator(name: str, seed: int):
    """A fresh scikit-learn estimator for classifier `name` ("bandpower", "covariance[/band]", "learned")."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # class weights balance every training fold: grouped folds leave the classes unequal in a fold, and a classifier
    # that leaned on the training prior would score below chance on the held-out windows of the larger test class
    logistic = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000)
    if name == "bandpower":
        return make_pipeline(StandardScaler(), logistic)
    if name.startswith("covariance"):
        from pyriemann.tangentspace import TangentSpace

        return make_pipeline(TangentSpace(metric="riemann"), StandardScaler(), logistic)
    if name == "learned":
        return ShallowConvNetClassifier(seed=seed)
    raise ValueError(f"unknown classifier {name!r}; known: {CLASSIFIERS}")


def _classifier_input(measured: _Measurements, name: str) -> np.ndarray:
    """What classifier `name` sees per window: features [N, D], covariances [N, C, C] or windows [N, C, L']."""
    if name == "bandpower":
        powers = measured.band_db.reshape(len(measured.band_db), -1)
        return np.concatenate([powers, measured.correlation["broadband"]], 1)
    if name.startswith("covariance"):
        return measured.covariance[name.partition("/")[2] or "broadband"]
    return measured.learned_input


def _cross_validated_accuracy(a: np.ndarray, b: np.ndarray, groups_a: np.ndarray, groups_b: np.ndarray, name: str,
                              folds: int, seed: int, grouped: bool = True) -> dict:
    """Held-out accuracy of classifier `name` telling `a` (label 1) from `b` (label 0), windows of equal counts.

    Grouped folds (`StratifiedGroupKFold`) keep every group's windows on one side of each split; a group id found in
    both sets is one group (its windows of both sets move together). Every window is predicted once, by the model
    of the fold that held it out; the accuracy pools those predictions (a fold without test windows is skipped).
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    x = np.concatenate([a, b])
    y = np.repeat([1, 0], [len(a), len(b)])
    groups = np.concatenate([groups_a, groups_b])
    if grouped:
        # at most as many folds as the smaller class has groups: every training fold then holds both classes
        splits = min(folds, len(set(groups_a.tolist())), len(set(groups_b.tolist())))
        if splits < 2:
            raise ValueError("grouped folds need at least 2 groups in each set")
        cv = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    else:
        splits = folds
        cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    estimator = _estimator(name, seed)
    predicted = np.full(len(y), -1)
    for train, test in cv.split(x, y, groups if grouped else None):
        if len(test) and len(set(y[train].tolist())) == 2:
            predicted[test] = clone(estimator).fit(x[train], y[train]).predict(x[test])
    scored = predicted >= 0
    return {"accuracy": float((predicted[scored] == y[scored]).mean()), "folds": splits}


def _balanced(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """`n` of `count` window indices at random, sorted."""
    return np.sort(rng.choice(count, n, replace=False))


def _expand_classifiers(classifiers: Sequence[str], covariance_bands: bool) -> list[str]:
    if isinstance(classifiers, str):
        classifiers = [classifiers]
    unknown = [c for c in classifiers if c not in CLASSIFIERS]
    if unknown:
        raise ValueError(f"unknown classifier(s) {unknown}; known: {list(CLASSIFIERS)}")
    names = []
    for c in classifiers:
        names.append(c)
        if c == "covariance" and covariance_bands:
            names += [f"covariance/{band}" for band in BANDS]
    return names


def _needs(names: Sequence[str]) -> tuple[list[str], bool]:
    """(bands whose covariance is needed, whether the learned classifier's input is) for classifier `names`."""
    return [n.partition("/")[2] or "broadband" for n in names if n.startswith("covariance")], "learned" in names


def two_sample_test(a: Any, b: Any, sampling_rate: float = SAMPLING_RATE, groups_a: Sequence | None = None,
                    groups_b: Sequence | None = None, classifier: str = "bandpower", window_seconds: float = 4.0,
                    folds: int = 5, seed: int = 0, grouped: bool = True) -> dict:
    """One classifier-based two-sample test: can `classifier` tell the windows of `a` from those of `b`?

    Args:
        a, b: EEG sets, `[N, C, T]` arrays or lists of `[C, T]` arrays in µV, one montage (same channel order).
        sampling_rate: Hz, of both.
        groups_a, groups_b: a group id per item (subject, recording, draw); default: every item its own group.
            An id found in both sets is the same group (e.g. one subject's windows split between a and b).
        classifier: "bandpower", "covariance", "covariance/<band>" or "learned".
        grouped: grouped folds (`StratifiedGroupKFold`, the default) or window-level folds (`StratifiedKFold`,
            leaky when groups differ: shown here so the leak can be measured).

    Returns `accuracy` (pooled held-out, 0.5 = indistinguishable), `folds`, `n_windows_per_class`.
    """
    rate = _check_rate(sampling_rate)
    length = _window_length(window_seconds, rate)
    first = a[0] if len(a) else None
    num_channels = int(np.asarray(first).shape[0]) if first is not None else 0
    sets = [_window_set(name, x, g, num_channels, length, f"{name}/") for name, x, g in
            (("a", a, groups_a), ("b", b, groups_b))]
    if classifier not in CLASSIFIERS and not (classifier.startswith("covariance/")
                                              and classifier.partition("/")[2] in BANDS):
        raise ValueError(f"unknown classifier {classifier!r}; known: {list(CLASSIFIERS)} or covariance/<band>")
    bands, learned = _needs([classifier])
    rng = np.random.default_rng(seed)
    n = min(len(s) for s in sets)
    keep = [_balanced(rng, len(s), n) for s in sets]
    measured = [_measure(s, rate, length, bands, learned, k) for s, k in zip(sets, keep)]
    inputs = [_classifier_input(m, classifier)[k] for m, k in zip(measured, keep)]
    result = _cross_validated_accuracy(inputs[0], inputs[1], sets[0].groups[keep[0]], sets[1].groups[keep[1]],
                                       classifier, folds, seed, grouped)
    return {**result, "n_windows_per_class": n, "grouped": grouped}


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


def _band_label(band: str) -> str:
    low, high = BROADBAND if band == "broadband" else BANDS[band]
    return f"{band} {low:g}-{high:g} Hz"


def _metric_label(key: str) -> str:
    """Row label of a metric key such as "topography_r/alpha" or "c2st/covariance/beta"."""
    kind, _, band = key.partition("/")
    if kind == "c2st":
        name, _, sub = band.partition("/")
        return f"C2ST covariance {_band_label(sub)} (tangent LR)" if sub else CLASSIFIER_LABELS[name]
    labels = {"band_db": "band power difference (dB), {}", "topography_r": "topography r, {}",
              "topography_max_db": "topography, largest channel difference (dB), {}",
              "correlation_error": "correlation matrix error (mean abs diff), {}"}
    if kind in labels:
        return labels[kind].format(_band_label(band))
    return {"spread/between": "between-window spread of log power (ratio to reference)",
            "spread/within": "within-window spread over 1-s pieces (ratio to reference)",
            "slope": "spectral slope 2-40 Hz (difference)", "seam": "seam ratio at 1-s edges"}[key]


# ----------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------


def _summary(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if not len(values) or np.isnan(values).all():
        return float("nan"), float("nan")
    return float(np.nanmean(values)), float(np.nanstd(values))


def _splits(real: _WindowSet, other: _WindowSet | None, repeats: int, seed: int) -> list[dict]:
    """Per repeat: reference window indices and the floor set with its indices (other real, or the other half)."""
    everything = np.arange(len(real))
    if other is not None:
        return [{"reference": everything, "floor_set": "other_real", "floor": np.arange(len(other))}
                for _ in range(repeats)]
    names = np.asarray(real.group_names, dtype=object)
    plans = []
    for r in range(repeats):
        shuffled = np.random.default_rng([seed, r]).permutation(names)
        half = set(shuffled[: len(names) // 2].tolist())
        in_half = np.array([g in half for g in real.groups])
        plans.append({"reference": everything[in_half], "floor_set": "real", "floor": everything[~in_half]})
    return plans


def realism_report(synthetic: Any, real: Any, channel_names: Sequence[str], sampling_rate: float = SAMPLING_RATE,
                   synthetic_groups: Sequence | None = None, real_groups: Sequence | None = None,
                   other_real: Any = None, other_real_groups: Sequence | None = None, window_seconds: float = 4.0,
                   repeats: int = 3, folds: int = 5, seed: int = 0, classifiers: Sequence[str] = CLASSIFIERS,
                   covariance_bands: bool = True) -> dict:
    """How far `synthetic` EEG is from `real` EEG, every figure beside its real-vs-real floor (module docstring).

    Args:
        synthetic, real, other_real: EEG sets in µV, `[N, C, T]` arrays or lists of `[C, T]` arrays (lengths may
            differ), rows in `channel_names` order. Each item is cut into non-overlapping `window_seconds` windows.
        channel_names: the C channel names (lower-case vocabulary names such as "fp1", "t3").
        sampling_rate: Hz, of every set (at least 100 Hz).
        synthetic_groups: a group id per synthetic item (default: every item is its own draw).
        real_groups, other_real_groups: a subject (or recording) id per item. Without `real_groups` every real item
            is its own group, which is right only when no two items share a subject (a warning says so).
        other_real: real EEG of other subjects (no group shared with `real`), for the floor; without it the floor
            is half of the reference groups against the other half (needs at least 4 groups).
        repeats: repeated group splits (random halves) / class subsamples and fold assignments: mean ± std.
        folds: grouped folds per classifier (fewer when there are fewer groups).
        classifiers: any of `CLASSIFIERS`; `covariance_bands` adds one covariance classifier per band.

    Returns a JSON-serialisable dict: `metrics` (row key -> {label, kind, synthetic, synthetic_std, floor,
    floor_std, reference, runs, ...}; `reference` is chance (0.5) for classifiers and the reference's own value
    otherwise), `settings`, `counts`, `warnings`, `maps` (profiles, correlation matrices and spectra for the
    figures) and `chance`.
    """
    names = _check_channel_names(channel_names)
    rate = _check_rate(sampling_rate)
    length = _window_length(window_seconds, rate)
    if int(repeats) < 1 or int(folds) < 2:
        raise ValueError(f"repeats must be >= 1 and folds >= 2, got repeats={repeats}, folds={folds}")
    classifier_names = _expand_classifiers(classifiers, covariance_bands)
    sets, notes = _input_sets(synthetic, real, other_real, synthetic_groups, real_groups, other_real_groups, len(names),
                              length, folds)
    plans = _splits(sets["real"], sets.get("other_real"), int(repeats), seed)
    for r, plan in enumerate(plans):  # the windows the classifiers see: both tests share the reference windows
        rng = np.random.default_rng([seed, r, 1])
        reference, floor_name, floor = plan["reference"], plan["floor_set"], plan["floor"]
        n = min(len(sets["synthetic"]), len(reference), len(floor))  # equally many windows per class
        plan["keep"] = {"real": reference[_balanced(rng, len(reference), n)],
                        "synthetic": _balanced(rng, len(sets["synthetic"]), n),
                        floor_name: floor[_balanced(rng, len(floor), n)]}
    classified = {name: np.unique(np.concatenate([plan["keep"][name] for plan in plans if name in plan["keep"]]))
                  for name in sets}
    bands, learned = _needs(classifier_names)
    measured = {name: _measure(data, rate, length, bands, learned, classified[name]) for name, data in sets.items()}
    inputs = {name: {c: _classifier_input(m, c) for c in classifier_names} for name, m in measured.items()}

    runs: dict[str, dict[str, list]] = {}  # metric key -> side ("synthetic" / "floor") -> one value per repeat
    deviations, counts_per_class = [], []
    for r, plan in enumerate(plans):
        reference, floor_name, floor, keep = plan["reference"], plan["floor_set"], plan["floor"], plan["keep"]
        # descriptive figures use every window of the split (deterministic given the split)
        ref_profile = _profile(measured["real"], reference)
        profiles = {"synthetic": _profile(measured["synthetic"], np.arange(len(sets["synthetic"]))),
                    "floor": _profile(measured[floor_name], floor)}
        for side, profile in profiles.items():
            for key, value in _compare(profile, ref_profile).items():
                runs.setdefault(key, {"synthetic": [], "floor": []})[side].append(value)
        deviations.append({side: p["deviation_db"] - ref_profile["deviation_db"] for side, p in profiles.items()})
        counts_per_class.append(len(keep["real"]))
        for c in classifier_names:
            row = runs.setdefault(f"c2st/{c}", {"synthetic": [], "floor": [], "folds": []})
            for side, name in (("synthetic", "synthetic"), ("floor", floor_name)):
                result = _cross_validated_accuracy(inputs[name][c][keep[name]], inputs["real"][c][keep["real"]],
                                                   sets[name].groups[keep[name]], sets["real"].groups[keep["real"]],
                                                   c, folds, seed + r)
                row[side].append(result["accuracy"])
                row["folds"].append(result["folds"])

    full_reference = _profile(measured["real"], np.arange(len(sets["real"])))
    report = {
        "metrics": _metric_rows(runs, classifier_names, _reference_values(full_reference), deviations, names,
                                min(counts_per_class)),
        "chance": CHANCE, "warnings": notes,
        "settings": {"channel_names": names, "sampling_rate": rate, "window_seconds": float(window_seconds),
                     "window_samples": length, "repeats": int(repeats), "folds": int(folds), "seed": int(seed),
                     "classifiers": classifier_names, "grouped_folds": True,
                     "floor": "other_real" if other_real is not None else "half_split",
                     "bands": {band: list(edges) for band, edges in BANDS.items()}},
        "counts": {name: {"items": len(data.items), "windows": len(data), "groups": len(data.group_names)}
                   for name, data in sets.items()},
        "maps": _maps(names, measured, sets, full_reference),
    }
    return _jsonable(report)


def _input_sets(synthetic, real, other_real, synthetic_groups, real_groups, other_real_groups, num_channels: int,
                length: int, folds: int) -> tuple[dict[str, _WindowSet], list[str]]:
    """The checked sets cut into windows ({"synthetic", "real"[, "other_real"]}) and notes on reading them."""
    notes = []
    if real_groups is None:
        notes.append("real_groups not given: every real item is its own group; if items share subjects, folds are "
                     "not grouped by subject and the accuracies are optimistic")
        warnings.warn(notes[-1], UserWarning, stacklevel=3)
    sets = {"synthetic": _window_set("synthetic", synthetic, synthetic_groups, num_channels, length, "synthetic draw "),
            "real": _window_set("real", real, real_groups, num_channels, length, "real item ")}
    if other_real is not None:
        if other_real_groups is None:
            raise ValueError("other_real: give other_real_groups (a subject id per item)")
        sets["other_real"] = _window_set("other_real", other_real, other_real_groups, num_channels, length, None)
        shared = set(sets["other_real"].group_names) & set(sets["real"].group_names)
        if shared:
            raise ValueError(f"other_real shares group(s) {sorted(shared)[:5]} with real: the floor needs real EEG of "
                             "other subjects")
    for name, data in sets.items():
        if len(data.group_names) < 2:
            raise ValueError(f"{name} has {len(data.group_names)} group: grouped folds need at least 2 groups per set")
    groups = len(sets["real"].group_names)
    if other_real is None and groups < 4:
        raise ValueError(f"real has {groups} groups: the half-vs-half floor needs at least 4 (subjects); pass "
                         "other_real (real EEG of other subjects) for the floor")
    if other_real is None and groups // 2 < 3:
        notes.append(f"a half of the {groups} reference groups holds {groups // 2}: a training fold then holds a "
                     "single reference subject and a classifier learns that subject (0.50 ± 0.00 means it called "
                     "every held-out window the other class, not that the sets are alike); pass other_real (real EEG "
                     "of other subjects) for a floor from more subjects")
    elif groups < 2 * folds:
        notes.append(f"{groups} reference groups: accuracies depend on the subjects drawn; "
                     "read them beside their floor")
    return sets, notes


def _metric_rows(runs: dict, classifier_names: list[str], references: dict, deviations: list[dict], names: list[str],
                 windows_per_class: int) -> dict:
    """Report rows (classifiers first, then the descriptive figures in `_compare` order) from per-repeat values."""
    # [C, B] per side: the channel's deviation (log band power minus the channel mean) minus the reference's
    mean_deviation = {side: np.mean([d[side] for d in deviations], 0) for side in ("synthetic", "floor")}
    metrics = {}
    for key in [f"c2st/{c}" for c in classifier_names] + [k for k in runs if not k.startswith("c2st/")]:
        values = runs[key]
        (s, s_std), (f, f_std) = _summary(values["synthetic"]), _summary(values["floor"])
        row = {"label": _metric_label(key), "kind": key.split("/")[0], "synthetic": s, "synthetic_std": s_std,
               "floor": f, "floor_std": f_std, "reference": CHANCE if key.startswith("c2st/") else references[key],
               "runs": {"synthetic": values["synthetic"], "floor": values["floor"]}}
        if key.startswith("c2st/"):
            row["folds"], row["n_windows_per_class"] = int(min(values["folds"])), int(windows_per_class)
        if key.startswith("topography_max_db/"):
            b = list(BANDS).index(key.partition("/")[2])
            row["channel"] = names[int(np.abs(mean_deviation["synthetic"][:, b]).argmax())]
            row["per_channel_db"] = {side: mean_deviation[side][:, b] for side in mean_deviation}
        metrics[key] = row
    return metrics


def _maps(names: list[str], measured: dict, sets: dict, reference: dict) -> dict:
    """What the figures draw: per set, band dB and deviation profiles [C][B], the mean 1-40 Hz correlation matrix
    [C][C] and the mean channel PSD over 0.5-45 Hz."""
    upper = np.triu_indices(len(names), 1)

    def matrix(pairs: np.ndarray) -> list:
        full = np.eye(len(names))
        full[upper] = pairs
        full[upper[::-1]] = pairs
        return full.tolist()

    profiles = {"real": reference}
    profiles.update({name: _profile(measured[name], np.arange(len(sets[name]))) for name in sets if name != "real"})
    keep = (measured["real"].frequencies >= 0.5) & (measured["real"].frequencies <= 45)
    return {"channel_names": names, "bands": list(BANDS),
            "band_db": {n: p["band_db"].tolist() for n, p in profiles.items()},
            "deviation_db": {n: p["deviation_db"].tolist() for n, p in profiles.items()},
            "correlation": {n: matrix(p["correlation"]["broadband"]) for n, p in profiles.items()},
            "spectra": {"frequencies": measured["real"].frequencies[keep].tolist(),
                        **{n: p["psd"][keep].tolist() for n, p in profiles.items()}},
            "slope": {n: p["slope"] for n, p in profiles.items()}}


def _jsonable(value: Any) -> Any:
    """Plain Python types for `json.dumps` (NaN becomes None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


# ----------------------------------------------------------------------------------------------------
# Table and files
# ----------------------------------------------------------------------------------------------------


_VALUE_FORMATS = {"c2st": "{:.2f}", "band_db": "{:+.2f}", "topography_r": "{:.2f}", "topography_max_db": "{:.2f}",
                  "correlation_error": "{:.3f}", "spread": "{:.2f}", "slope": "{:+.2f}", "seam": "{:.2f}"}
_REFERENCE_FORMATS = {"c2st": "{:.2f} (chance)", "band_db": "{:.1f} dB", "topography_r": "{:.0f} (unrelated maps)",
                      "topography_max_db": "channel sd {:.2f} dB", "correlation_error": "mean abs r {:.2f}",
                      "spread": "{:.2f} dB", "slope": "{:.2f}", "seam": "{:.2f}"}


def _cell(value: float | None, template: str, std: float | None = None) -> str:
    if value is None:
        return "n/a"
    return template.format(value) + (f" ± {std:.2f}" if std is not None else "")


def format_report(report: dict) -> str:
    """A [`realism_report`] as markdown: one row per metric, synthetic | floor | chance or the reference's value."""
    settings, counts = report["settings"], report["counts"]
    floor = ("real EEG of other subjects vs the reference" if settings["floor"] == "other_real" else
             f"half of the reference subjects vs the other half ({settings['repeats']} random halves; the synthetic "
             "set is compared with one half)")
    described = "; ".join(f"{name}: {c['items']} items, {c['windows']} windows, {c['groups']} groups"
                          for name, c in counts.items())
    lines = [f"Realism of synthetic EEG: {len(settings['channel_names'])} channels, {settings['sampling_rate']:g} Hz, "
             f"{settings['window_seconds']:g}-s windows ({described}).",
             f"Floor = {floor}. Classifier accuracies: folds grouped by subject / draw, classes balanced, "
             f"mean ± std over {settings['repeats']} repeats; chance {report['chance']:.2f}.", "",
             "| metric | synthetic | floor (real vs real) | chance / reference |", "|---|---|---|---|"]
    for row in report["metrics"].values():
        kind = row["kind"]
        spread = kind == "c2st" and settings["repeats"] > 1  # descriptive spreads are in the JSON
        synthetic = _cell(row["synthetic"], _VALUE_FORMATS[kind], row["synthetic_std"] if spread else None)
        floor_value = _cell(row["floor"], _VALUE_FORMATS[kind], row["floor_std"] if spread else None)
        label = row["label"] + (f" [{row['channel']}]" if "channel" in row else "")
        lines.append(f"| {label} | {synthetic} | {floor_value} | {_cell(row['reference'], _REFERENCE_FORMATS[kind])} |")
    for note in report.get("warnings", []):
        lines.append(f"\nnote: {note}")
    return "\n".join(lines)


REPORT_FILES = ("report.json", "report.md", "c2st.png", "topomaps.png", "correlation.png", "spectra.png")


def write_report(report: dict, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Write report.json, report.md and the figures (`lbm.realism_plots`) into `out_dir`; returns their paths.
    Refuses (FileExistsError, before writing anything) to replace an existing file unless `overwrite`."""
    from .realism_plots import plot_report

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: give a folder for the report")
    existing = [str(out / name) for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s): pass overwrite=True (--overwrite) to replace them, "
                              "or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(format_report(report) + "\n")
    return [out / "report.json", out / "report.md", *plot_report(report, out)]


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

    def fit(pa: np.ndarray, pb: np.ndarray) -> tuple[float, np.ndarray]:
        step = (index_a - index_b).astype(np.float64)
        slope = float((pa - pb) @ step / (step @ step))
        electrode = ((pa - slope * index_a) + (pb - slope * index_b)) / 2
        return slope, electrode - electrode.mean()

    slope, electrode = fit(power_a, power_b)
    position = np.arange(len(montage))
    result = {"order_slope_db_per_channel": slope,
              "slopes_db_per_channel": {"a": _slope(index_a, power_a), "b": _slope(index_b, power_b)},
              "montage_slopes_db_per_channel": {"a": _slope(position, power_a), "b": _slope(position, power_b)},
              "electrode_slope_db_per_channel": _slope(position, electrode), "electrode_db": electrode.tolist(),
              "channel_names": montage}
    if real is not None:
        items = _as_items("real", real, len(montage))
        groups = np.asarray([str(g) for g in (real_groups if real_groups is not None else range(len(items)))])
        names = np.unique(groups)
        if len(names) < 2:
            raise ValueError("real: the order-drift floor needs at least two groups")
        power = np.array([total_power_db(x, rate) for x in items])  # [N, C] in montage order
        floors = []
        for r in range(int(repeats)):
            half = np.random.default_rng([seed, r]).permutation(names)[: len(names) // 2]
            in_half = np.isin(groups, half)
            # the halves as if sampled in the two orders: power is the electrode's, any slope is noise
            pa, pb = power[in_half].mean(0), power[~in_half].mean(0)
            floors.append(abs(fit(pa, pb)[0]))
        result["floor"] = {"mean_abs_order_slope_db_per_channel": float(np.mean(floors)),
                           "std": float(np.std(floors))}
    return _jsonable(result)


# ----------------------------------------------------------------------------------------------------
# Labelled sets: train on synthetic, test on real (TSTR) beside train on real, test on real (TRTR)
# ----------------------------------------------------------------------------------------------------


def state_features(items: Sequence[Any], sampling_rate: float = SAMPLING_RATE,
                   window_seconds: float = 4.0) -> np.ndarray:
    """Log band powers (dB) of every channel of every `window_seconds` window of `items` (`[C, T]` µV, one
    montage): `[N, C * 5]`."""
    signals = [as_signal(x) for x in items]
    windows, _ = cut_windows(signals, int(round(window_seconds * sampling_rate))) if signals else (np.zeros(0), None)
    if not len(windows):
        return np.zeros((0, 0))
    return np.stack([band_powers(w, sampling_rate).ravel() for w in windows])


def _labelled_features(items_by_label: dict[str, list], classes: Sequence[str], sampling_rate: float,
                       window_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for index, name in enumerate(classes):
        block = state_features(items_by_label.get(name, []), sampling_rate, window_seconds)
        if len(block):
            features.append(block)
            labels.append(np.full(len(block), index))
    if not features:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    return np.concatenate(features), np.concatenate(labels)


def state_classification(train: dict[str, list], test: dict[str, list], classes: Sequence[str],
                         sampling_rate: float = SAMPLING_RATE, window_seconds: float = 4.0) -> float:
    """Balanced accuracy on `test` of a logistic regression (standardised `state_features`) fitted on `train`
    (each: label -> list of `[C, T]` µV items of one montage). NaN when either lacks a class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _labelled_features(train, classes, sampling_rate, window_seconds)
    x_test, y_test = _labelled_features(test, classes, sampling_rate, window_seconds)
    if len(set(y_train.tolist())) < len(classes) or len(set(y_test.tolist())) < len(classes):
        return float("nan")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    classifier.fit(x_train, y_train)
    return float(balanced_accuracy_score(y_test, classifier.predict(x_test)))


def tstr_trtr(synthetic: dict[str, list], real_train: dict[str, list], real_test: dict[str, list],
              classes: Sequence[str], sampling_rate: float = SAMPLING_RATE) -> dict:
    """Is labelled synthetic EEG useful for a state classifier? (each argument: label -> list of `[C, T]` µV items;
    `real_test` should be other subjects than `real_train`.) Balanced accuracies on `real_test` of the classifier
    of [`state_classification`] trained on `real_train` (`trtr`), on `synthetic` (`tstr`), on both
    (`real_plus_synthetic`), and `chance` (1 / classes)."""
    both = {c: list(real_train.get(c, [])) + list(synthetic.get(c, [])) for c in classes}
    return {"trtr": state_classification(real_train, real_test, classes, sampling_rate),
            "tstr": state_classification(synthetic, real_test, classes, sampling_rate),
            "real_plus_synthetic": state_classification(both, real_test, classes, sampling_rate),
            "chance": 1 / len(classes)}


# ----------------------------------------------------------------------------------------------------
# Loading sets: prepared datasets, MNE recordings
# ----------------------------------------------------------------------------------------------------

MNE_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif", ".fif.gz", ".set", ".vhdr", ".cnt", ".mff", ".eeg.bin")


@dataclass
class EEGSet:
    """A set of EEG items for the report: `signals` (list of `[C, T]` µV), their `channel_names` (C), the
    `sampling_rate` (Hz), a group id per item (subject / recording) and where each item came from."""

    signals: list[np.ndarray]
    channel_names: list[str]
    sampling_rate: float
    groups: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.signals)


def prepared_set(rows: Iterable[dict], channel_names: Sequence[str] | None = None, exclude_groups: Iterable[str] = (),
                 sampling_rate: float = SAMPLING_RATE) -> EEGSet:
    """Windows of prepared rows (`neurorvq prepare`: `input_values` [C][T] µV at 200 Hz, `valid_samples`,
    `channel_names`, `subject_id`) that have every channel of `channel_names` (default: the most common montage),
    reordered to it, grouped by `subject_id`; rows of `exclude_groups` are left out."""
    excluded = set(exclude_groups)
    if hasattr(rows, "select_columns"):  # a datasets.Dataset: pick rows by their names before reading signals
        meta = rows.select_columns(["channel_names", "subject_id"])
        names_column, subjects = list(meta["channel_names"]), list(meta["subject_id"])
    else:
        rows = list(rows)
        names_column, subjects = [r["channel_names"] for r in rows], [r["subject_id"] for r in rows]
    lowered = [[str(n).lower() for n in names] for names in names_column]
    if channel_names is None:
        if not lowered:
            raise ValueError("no prepared row given")
        channel_names = Counter(tuple(n) for n in lowered).most_common(1)[0][0]
    wanted = [str(n).lower() for n in channel_names]
    keep = [i for i, names in enumerate(lowered) if set(wanted) <= set(names) and str(subjects[i]) not in excluded]
    chosen = rows.select(keep) if hasattr(rows, "select") else [rows[i] for i in keep]
    signals, groups, sources = [], [], []
    for i, row in zip(keep, chosen):
        x = np.asarray(row["input_values"], dtype=np.float64)[:, : int(row["valid_samples"])]
        signals.append(x[[lowered[i].index(n) for n in wanted]])
        groups.append(str(subjects[i]))
        sources.append(str(row.get("recording_id", subjects[i])))
    if sampling_rate != SAMPLING_RATE:
        signals = [_resample(x, SAMPLING_RATE, float(sampling_rate)) for x in signals]
    return EEGSet(signals, wanted, float(sampling_rate), groups, sources)


def _is_prepared(path: Path) -> bool:
    return path.is_dir() and (path / "prepare_manifest.json").is_file()


def _recording_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(MNE_SUFFIXES))
    if not files:
        raise ValueError(f"{path}: no recording MNE reads ({', '.join(MNE_SUFFIXES)}) in this folder")
    return files


def _eeg_of(inst, wanted: list[str] | None, source: str) -> tuple[np.ndarray, list[str]]:
    """EEG channels of an MNE Raw/Epochs as µV (`[C, T]` or `[E, C, T]`) in `wanted` order (default: every EEG
    channel, names normalised to lower-case vocabulary spelling)."""
    from ..tokenizer.channels import normalize_channel_name
    from ..tokenizer.feature_extraction_neurorvq import infer_channel_type

    types = inst.get_channel_types()
    eeg = [i for i, (name, kind) in enumerate(zip(inst.ch_names, types))
           if kind == "eeg" and name not in inst.info["bads"] and infer_channel_type(name) is None]
    names = [normalize_channel_name(inst.ch_names[i]) for i in eeg]
    if wanted is None:
        if len(set(names)) != len(names):
            raise ValueError(f"{source}: channel names collide after normalisation: {names}")
        wanted = names
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"{source} lacks channel(s) {missing} (it has {names})")
    picks = [eeg[names.index(n)] for n in wanted]
    return inst.get_data(picks=picks) * 1e6, wanted  # Volts -> µV


def load_eeg(source: Any, channel_names: Sequence[str] | None = None, sampling_rate: float = SAMPLING_RATE,
             split: str = "validation", group_pattern: str | None = None) -> EEGSet:
    """Read a set of EEG for the report.

    `source`: an `mne.io.Raw` or `mne.Epochs`, a recording file MNE reads (`mne.io.read_raw`; `-epo.fif` files as
    epochs), a folder of them (searched recursively), a prepared dataset folder (`neurorvq prepare`; `split` picks
    the split, groups are subjects) or a list of any of these. Signals become µV (MNE holds Volts), resampled to
    `sampling_rate`; the EEG channels are picked by name (`channel_names`, case-insensitive; default: those of the
    first recording, which every other must have). A recording is one item (an epoch of Epochs is one item) and its
    group is the file name's match of `group_pattern` (a regular expression; its first group if it has one, e.g.
    `Subject\\d+` groups the EEGMAT files of one subject) or else the file name.
    """
    import mne

    from ..tokenizer.feature_extraction_neurorvq import read_recording

    rate = _check_rate(sampling_rate)
    wanted = None if channel_names is None else [str(n).lower() for n in channel_names]
    pattern = re.compile(group_pattern) if group_pattern else None
    parts = list(source) if isinstance(source, (list, tuple)) else [source]
    signals, groups, sources = [], [], []

    def group_of(label: str) -> str:
        if pattern is None:
            return label
        found = pattern.search(label)
        if not found:
            raise ValueError(f"--group-pattern {pattern.pattern!r} does not match {label!r}")
        return found.group(1) if pattern.groups else found.group(0)

    def add(inst, label: str):
        nonlocal wanted
        if inst.info["sfreq"] != rate:
            inst = inst.copy().load_data().resample(rate, verbose="error") if isinstance(inst, mne.io.BaseRaw) \
                else inst.copy().resample(rate, verbose="error")
        data, wanted = _eeg_of(inst, wanted, label)
        items = list(data) if data.ndim == 3 else [data]
        signals.extend(items)
        groups.extend([group_of(label)] * len(items))
        sources.extend([label] * len(items))

    for part in parts:
        if isinstance(part, (mne.io.BaseRaw, mne.BaseEpochs)):
            filenames = [f for f in (getattr(part, "filenames", None) or []) if f]
            add(part, Path(filenames[0]).name if filenames else f"item{len(signals)}")
            continue
        path = Path(part)
        if _is_prepared(path):
            from ..tokenizer.data import load_prepared

            prepared = prepared_set(load_prepared(path, split), wanted, sampling_rate=rate)
            wanted = prepared.channel_names
            signals += prepared.signals
            groups += prepared.groups
            sources += prepared.sources
            continue
        for file in _recording_files(path):
            if file.name.lower().endswith(("-epo.fif", "_epo.fif", "-epo.fif.gz")):
                add(mne.read_epochs(file, preload=True, verbose="error"), file.name)
            else:
                add(read_recording(file), file.name)
    if not signals:
        raise ValueError(f"no EEG item found in {source}")
    return EEGSet(signals, list(wanted), rate, groups, sources)


__all__ = [
    "BANDS",
    "CHANCE",
    "CLASSIFIERS",
    "EEGSet",
    "ShallowConvNetClassifier",
    "as_signal",
    "band_powers",
    "cut_windows",
    "format_report",
    "load_eeg",
    "mean_abs_correlation",
    "order_drift",
    "prepared_set",
    "realism_report",
    "spectral_slope",
    "state_classification",
    "state_features",
    "total_power_db",
    "tstr_trtr",
    "two_sample_test",
    "welch_psd",
    "write_report",
]
