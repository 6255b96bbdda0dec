"""Evaluate an LBM beyond its own likelihood: count baselines for the code NLL, and realism of generated EEG.

Two halves:

1. **Code baselines** (compare with `lbm.training.validation_nll`). Both are fitted on training rows and
   scored on validation rows of a code dataset (`lbm.data`), on real patches only (`valid_patches`):

   - `unigram_nll`: one code distribution per stream (stream order of `lbm.layout`);
   - `bigram_nll`: per stream, P(code at (patch a, channel c) | code of the same stream at (a - 1, c)),
     i.e. the same channel one second earlier; the first patch of a window falls back to the unigram.

   Both use add-one (Laplace) smoothing and report bits per code (mean over every scored code) and bits
   per position (bits per code x M streams), the units of `validation_nll`.

2. **Realism** of synthetic EEG against real EEG. Signals are lists of arrays `[C, T]` in microvolts at
   200 Hz (C may differ between items). Spectra are Welch PSDs (Hann, `nperseg` 200 = 1 Hz bins, or the
   signal length when shorter), in µV^2/Hz.

   - `band_powers`: power per EEG band (`BANDS`), in dB re 1 µV^2;
   - `spectral_slope`: slope of log10 PSD against log10 frequency over 2-40 Hz (1/f noise -> -1);
   - `realism_report`: band dB and slope differences, and a two-sample classifier on 4-s channel
     segments (cross-validated accuracy; 0.5 means the classifier cannot tell synthetic from real);
   - `plot_realism`, `format_realism`: a figure and a markdown table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from scipy import optimize
from scipy import signal as scipy_signal

from ..tokenizer.evaluation import BANDS, SAMPLING_RATE
from .layout import codes_to_positions

WELCH_NPERSEG = 200  # samples: 1-s Hann windows, 1 Hz resolution at 200 Hz
SLOPE_RANGE = (2.0, 40.0)  # Hz, range of the log-log fit of `spectral_slope`
SEGMENT_SECONDS = 4.0  # length of the channel segments the two-sample classifier sees
POWER_FLOOR = 1e-20  # µV^2 (or µV^2/Hz): keeps the log of a flat channel finite
FEATURE_NAMES = [f"log_relative_{band}" for band in BANDS] + ["spectral_slope", "log_total_power"]


# ----------------------------------------------------------------------------------------------------
# Code baselines
# ----------------------------------------------------------------------------------------------------


def row_streams(row: dict) -> np.ndarray:
    """The codes of one code row's real patches, per position: `[A_valid, C, M]` int64.

    `row` has `codes` [S][K][C][A], `scale_codes` [2][C][A] or empty, `valid_patches`; the stream order is
    `lbm.layout`'s (scale streams first, then (s, k) scale-major), patches beyond `valid_patches` are dropped.
    """
    codes = torch.as_tensor(np.asarray(row["codes"], dtype=np.int64))
    if codes.dim() != 4:
        raise ValueError(f"row codes must be [S][K][C][A], got shape {tuple(codes.shape)}")
    scale = np.asarray(row.get("scale_codes", []), dtype=np.int64)
    scale_codes = torch.as_tensor(scale)[None] if scale.size else None
    positions = codes_to_positions(codes[None], scale_codes)[0]  # [A*C, M], time-major
    _, _, channels, patches = codes.shape
    streams = positions.reshape(patches, channels, -1).numpy()
    return streams[: max(0, min(int(row["valid_patches"]), patches))]


class _StreamCounts:
    """Code counts per stream, kept as one flat array: stream m's table starts at `offsets[m]`.

    With `pairs=True`, stream m's table is its [V_m, V_m] (previous, next) matrix, flattened.
    Indices are buffered and counted with `np.bincount` in chunks.
    """

    def __init__(self, vocab_sizes: Sequence[int], pairs: bool, chunk: int = 1 << 22):
        self.sizes = np.asarray(vocab_sizes, dtype=np.int64)
        cells = self.sizes**2 if pairs else self.sizes
        self.offsets = np.cumsum(cells) - cells
        self.counts = np.zeros(int(cells.sum()), dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_size, self._chunk = 0, chunk

    def add(self, flat_indices: np.ndarray) -> None:
        self._pending.append(flat_indices.ravel())
        self._pending_size += flat_indices.size
        if self._pending_size >= self._chunk:
            self.flush()

    def flush(self) -> np.ndarray:
        if self._pending:
            self.counts += np.bincount(np.concatenate(self._pending), minlength=self.counts.size)
            self._pending, self._pending_size = [], 0
        return self.counts


def _checked_streams(row: dict, vocab_sizes: np.ndarray) -> np.ndarray:
    """`row_streams(row)` after checking the number of streams and every code's range."""
    streams = row_streams(row)
    if streams.shape[-1] != len(vocab_sizes):
        raise ValueError(f"rows have {streams.shape[-1]} streams but {len(vocab_sizes)} stream_vocab_sizes were given")
    if streams.size and ((streams < 0).any() or (streams >= vocab_sizes).any()):
        raise ValueError("a code lies outside its stream's vocabulary")
    return streams


def _fit_counts(rows: Iterable[dict], vocab_sizes: np.ndarray, pairs: bool) -> tuple[_StreamCounts, _StreamCounts | None]:
    """One pass over training rows: code counts per stream and, with `pairs`, (previous, next) counts per
    stream for the same channel in consecutive real patches."""
    codes = _StreamCounts(vocab_sizes, pairs=False)
    transitions = _StreamCounts(vocab_sizes, pairs=True) if pairs else None
    for row in rows:
        streams = _checked_streams(row, vocab_sizes)  # [A, C, M]
        codes.add(codes.offsets + streams)
        if transitions is not None and len(streams) > 1:
            transitions.add(transitions.offsets + streams[:-1] * vocab_sizes + streams[1:])
    codes.flush()
    if transitions is not None:
        transitions.flush()
    return codes, transitions


def _unigram_log2_probs(codes: _StreamCounts) -> np.ndarray:
    """Add-one unigram per stream: flat log2 probabilities [sum V] (stream m from `codes.offsets[m]`)."""
    totals = np.add.reduceat(codes.counts, codes.offsets)
    return np.log2(codes.counts + 1.0) - np.log2(np.repeat(totals + codes.sizes, codes.sizes))


def _nll_summary(bits: np.ndarray, codes: np.ndarray) -> dict:
    """Per-stream total bits [M] and scored code counts [M] -> the baseline's result dict."""
    total_codes = int(codes.sum())
    if total_codes == 0:
        raise ValueError("no real validation patch to score")
    bits_per_code = float(bits.sum() / total_codes)
    return {"bits_per_code": bits_per_code, "bits_per_position": bits_per_code * len(codes),
            "bits_per_stream": (bits / np.maximum(codes, 1)).tolist(),
            "num_codes": total_codes, "num_positions": total_codes // len(codes)}


def unigram_nll(train_rows: Iterable[dict], validation_rows: Iterable[dict], stream_vocab_sizes: Sequence[int]) -> dict:
    """Add-one unigram baseline: one code distribution per stream, fitted on train rows.

    Args:
        train_rows, validation_rows: code rows (`lbm.data`), e.g. `load_codes(path, split)`.
        stream_vocab_sizes: codes per stream, `CodeLayout.stream_vocab_sizes` ([M]).

    Returns:
        dict with `bits_per_code` (mean -log2 p over every real validation code), `bits_per_position`
        (bits_per_code x M), `bits_per_stream` ([M]), `num_codes`, `num_positions`.
    """
    sizes = np.asarray(stream_vocab_sizes, dtype=np.int64)
    counts, _ = _fit_counts(train_rows, sizes, pairs=False)
    log2_probs, offsets = _unigram_log2_probs(counts), counts.offsets
    bits, codes = np.zeros(len(sizes)), np.zeros(len(sizes), dtype=np.int64)
    for row in validation_rows:
        streams = _checked_streams(row, sizes).reshape(-1, len(sizes))
        bits -= log2_probs[offsets + streams].sum(0)
        codes += len(streams)
    return _nll_summary(bits, codes)


def bigram_nll(train_rows: Iterable[dict], validation_rows: Iterable[dict], stream_vocab_sizes: Sequence[int]) -> dict:
    """Add-one bigram baseline: per stream, P(code(a, c) | code(a - 1, c)) of the same stream and channel.

    The first patch of every validation window is scored with the (add-one) unigram. Same arguments and
    result keys as [`unigram_nll`].
    """
    sizes = np.asarray(stream_vocab_sizes, dtype=np.int64)
    counts, transitions = _fit_counts(train_rows, sizes, pairs=True)
    unigram, unigram_offsets = _unigram_log2_probs(counts), counts.offsets
    pairs, pair_offsets = transitions.counts, transitions.offsets
    # add-one denominators: count of each previous code as a previous code, + V
    row_totals = np.concatenate([pairs[o: o + v * v].reshape(v, v).sum(1) for o, v in zip(pair_offsets, sizes)])
    log2_denominators = np.log2(row_totals + np.repeat(sizes, sizes))
    bits, codes = np.zeros(len(sizes)), np.zeros(len(sizes), dtype=np.int64)
    for row in validation_rows:
        streams = _checked_streams(row, sizes)  # [A, C, M]
        if not len(streams):
            continue
        bits -= unigram[unigram_offsets + streams[0]].sum(0)
        previous, following = streams[:-1], streams[1:]
        counts = pairs[pair_offsets + previous * sizes + following]
        log2_probs = np.log2(counts + 1.0) - log2_denominators[unigram_offsets + previous]
        bits -= log2_probs.reshape(-1, len(sizes)).sum(0)
        codes += streams.shape[0] * streams.shape[1]
    return _nll_summary(bits, codes)


# ----------------------------------------------------------------------------------------------------
# Spectra
# ----------------------------------------------------------------------------------------------------


def _as_signal(x: Any) -> np.ndarray:
    """An EEG item as float64 `[C, T]` (a 1-D signal becomes one channel)."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[-1] < 2:
        raise ValueError(f"an EEG item must be [C, T] with T >= 2, got shape {x.shape}")
    return x


def welch_psd(x: np.ndarray, nperseg: int = WELCH_NPERSEG) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD along the last axis: (frequencies [F] Hz, psd [..., F] µV^2/Hz); `nperseg` is capped by T."""
    return scipy_signal.welch(x, fs=SAMPLING_RATE, nperseg=min(nperseg, x.shape[-1]), axis=-1)


def _band_powers_from_psd(frequencies: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Power per band in µV^2 (PSD summed over [low, high) bins x bin width): [..., 5]."""
    width = frequencies[1] - frequencies[0]
    powers = []
    for band, (low, high) in BANDS.items():
        in_band = (frequencies >= low) & (frequencies < high)
        if not in_band.any():
            raise ValueError(f"signal too short to resolve the {band} band ({low}-{high} Hz) with "
                             f"{width:.2f} Hz Welch bins")
        powers.append(psd[..., in_band].sum(-1) * width)
    return np.stack(powers, -1)


def _slope_from_psd(frequencies: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Least-squares slope of log10 psd against log10 frequency over `SLOPE_RANGE`: [...]."""
    in_range = (frequencies >= SLOPE_RANGE[0]) & (frequencies <= SLOPE_RANGE[1])
    if in_range.sum() < 2:
        raise ValueError("signal too short for a spectral slope over 2-40 Hz")
    log_f = np.log10(frequencies[in_range])
    log_p = np.log10(np.maximum(psd[..., in_range], POWER_FLOOR))
    centred = log_f - log_f.mean()
    return (log_p - log_p.mean(-1, keepdims=True)) @ centred / (centred @ centred)


def band_powers(x: Any) -> np.ndarray:
    """Band powers of every channel of `x` ([C, T], µV at 200 Hz): `[C, 5]` in dB re 1 µV^2 (10 log10),
    bands `BANDS` (delta, theta, alpha, beta, gamma), from a Welch PSD."""
    frequencies, psd = welch_psd(_as_signal(x))
    return 10 * np.log10(np.maximum(_band_powers_from_psd(frequencies, psd), POWER_FLOOR))


def spectral_slope(x: Any) -> np.ndarray:
    """Slope of the log-log Welch PSD over 2-40 Hz of every channel of `x` ([C, T], µV at 200 Hz): `[C]`
    (pink 1/f noise -> -1, brown 1/f^2 noise -> -2)."""
    frequencies, psd = welch_psd(_as_signal(x))
    return _slope_from_psd(frequencies, psd)


# ----------------------------------------------------------------------------------------------------
# Two-sample classifier
# ----------------------------------------------------------------------------------------------------


def channel_segments(items: Iterable[Any], seconds: float = SEGMENT_SECONDS) -> tuple[np.ndarray, np.ndarray]:
    """Every channel of every item cut into non-overlapping segments.

    Returns (segments `[N, seconds * 200]` µV, item index of each segment `[N]`). A remainder shorter than
    a segment (and an item shorter than one) is dropped.
    """
    length = int(round(seconds * SAMPLING_RATE))
    segments, owners = [np.zeros((0, length))], [np.zeros(0, dtype=np.int64)]
    for index, item in enumerate(items):
        x = _as_signal(item)
        count = x.shape[-1] // length
        if count:
            segments.append(x[:, : count * length].reshape(-1, length))
            owners.append(np.full(len(segments[-1]), index))
    return np.concatenate(segments), np.concatenate(owners)


def segment_features(segments: np.ndarray) -> np.ndarray:
    """Classifier features of channel segments `[N, T]`: `[N, 7]` (`FEATURE_NAMES`) = log10 relative band
    powers (band / sum of the 5 bands), spectral slope, log10 total power (sum of the 5 bands, µV^2)."""
    frequencies, psd = welch_psd(segments)
    powers = np.maximum(_band_powers_from_psd(frequencies, psd), POWER_FLOOR)
    total = powers.sum(-1, keepdims=True)
    return np.concatenate([np.log10(powers / total), _slope_from_psd(frequencies, psd)[:, None], np.log10(total)], -1)


def _fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float) -> np.ndarray:
    """L2-regularised logistic regression (bias not penalised) by L-BFGS: weights [D + 1], bias last.

    Minimises mean log-loss + l2 / 2 * |w|^2 on (already standardised) features [N, D], labels {0, 1} [N].
    """
    design = np.hstack([features, np.ones((len(features), 1))])
    signs = 2.0 * labels - 1.0

    def loss_and_grad(w):
        margins = signs * (design @ w)
        loss = np.logaddexp(0.0, -margins).mean() + 0.5 * l2 * (w[:-1] @ w[:-1])
        grad = design.T @ (-signs * _sigmoid(-margins)) / len(design)
        grad[:-1] += l2 * w[:-1]
        return loss, grad

    result = optimize.minimize(loss_and_grad, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B")
    return result.x


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _stratified_folds(labels: np.ndarray, groups: np.ndarray, folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of each held-out fold: per class, whole groups (items) are dealt to the folds, so a fold never
    shares an item with its training set; a class with fewer groups than folds is split by segment."""
    held_out = [[] for _ in range(folds)]
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        names = np.unique(groups[members])
        if len(names) >= folds:
            for fold, chosen in enumerate(np.array_split(rng.permutation(names), folds)):
                held_out[fold].append(members[np.isin(groups[members], chosen)])
        else:
            for fold, chosen in enumerate(np.array_split(rng.permutation(members), folds)):
                held_out[fold].append(chosen)
    return [np.concatenate(parts) for parts in held_out]


def cross_validated_accuracy(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
                             folds: int = 5, l2: float = 1e-2, seed: int = 0) -> tuple[float, float]:
    """k-fold held-out accuracy of a logistic regression: (mean, std over folds).

    Features [N, D] are standardised with each training fold's mean and std; labels {0, 1} [N]; `groups`
    [N] (e.g. the item of each segment) are kept whole within a fold (see `_stratified_folds`).
    """
    rng = np.random.default_rng(seed)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    accuracies = []
    for held_out in _stratified_folds(labels, groups, folds, rng):
        train = np.setdiff1d(np.arange(len(labels)), held_out)
        mean, std = features[train].mean(0), features[train].std(0) + 1e-12
        w = _fit_logistic((features[train] - mean) / std, labels[train], l2)
        scores = (features[held_out] - mean) / std @ w[:-1] + w[-1]
        accuracies.append(float(((scores > 0) == (labels[held_out] == 1)).mean()))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def two_sample_accuracy(synthetic: Iterable[Any], real: Iterable[Any], folds: int = 5, seed: int = 0) -> dict:
    """How well a classifier tells synthetic from real 4-s channel segments (`segment_features`).

    Classes are balanced by subsampling the larger one; folds keep each item's segments together (when
    each class has at least `folds` items), so the score measures the process, not memorised items.
    Returns `accuracy` (mean held-out accuracy over `folds`, 0.5 = indistinguishable), `accuracy_std`,
    `n_segments_per_class`, `folds`. With fewer segments per class than folds the accuracy is NaN.
    """
    rng = np.random.default_rng(seed)
    (synthetic_segments, synthetic_items), (real_segments, real_items) = channel_segments(synthetic), channel_segments(real)
    n = min(len(synthetic_segments), len(real_segments))
    result = {"accuracy": float("nan"), "accuracy_std": float("nan"), "n_segments_per_class": n, "folds": folds}
    if n < folds:
        return result
    keep_synthetic = np.sort(rng.choice(len(synthetic_segments), n, replace=False))
    keep_real = np.sort(rng.choice(len(real_segments), n, replace=False))
    features = segment_features(np.concatenate([synthetic_segments[keep_synthetic], real_segments[keep_real]]))
    labels = np.repeat([1, 0], n)  # 1 = synthetic
    groups = np.concatenate([synthetic_items[keep_synthetic], real_items[keep_real]])
    result["accuracy"], result["accuracy_std"] = cross_validated_accuracy(features, labels, groups, folds, seed=seed)
    return result


# ----------------------------------------------------------------------------------------------------
# Report, figure, table
# ----------------------------------------------------------------------------------------------------


def _pooled(items: Sequence[Any], per_channel) -> np.ndarray:
    """`per_channel(item)` ([C, ...]) of every item, concatenated over channels."""
    if not len(items):
        raise ValueError("no EEG item given")
    return np.concatenate([per_channel(item) for item in items])


def realism_report(synthetic: Sequence[Any], real: Sequence[Any], folds: int = 5, seed: int = 0) -> dict:
    """Compare synthetic EEG with real EEG (lists of `[C, T]` arrays, µV at 200 Hz).

    Returns a dict:
        `bands`: per band, `synthetic_db` / `real_db` (mean band power over every channel of every item,
            dB re 1 µV^2) and `difference_db` (synthetic - real);
        `slope`: `synthetic_mean`, `synthetic_std`, `real_mean`, `real_std` of the per-channel 2-40 Hz
            log-log slope;
        `classifier`: [`two_sample_accuracy`] on 4-s channel segments;
        `n_items`, `n_channels`: per class.
    """
    synthetic_db, real_db = _pooled(synthetic, band_powers), _pooled(real, band_powers)
    synthetic_slope, real_slope = _pooled(synthetic, spectral_slope), _pooled(real, spectral_slope)
    bands = {band: {"synthetic_db": float(synthetic_db[:, i].mean()), "real_db": float(real_db[:, i].mean()),
                    "difference_db": float(synthetic_db[:, i].mean() - real_db[:, i].mean())}
             for i, band in enumerate(BANDS)}
    slope = {"synthetic_mean": float(synthetic_slope.mean()), "synthetic_std": float(synthetic_slope.std()),
             "real_mean": float(real_slope.mean()), "real_std": float(real_slope.std())}
    return {"bands": bands, "slope": slope, "classifier": two_sample_accuracy(synthetic, real, folds, seed),
            "n_items": {"synthetic": len(synthetic), "real": len(real)},
            "n_channels": {"synthetic": len(synthetic_db), "real": len(real_db)}}


def format_realism(report: dict) -> str:
    """A [`realism_report`] as a markdown table (one row per band, slope, classifier accuracy)."""
    lines = ["| metric | synthetic | real | synthetic - real |", "|---|---|---|---|"]
    for band, row in report["bands"].items():
        low, high = BANDS.get(band, (float("nan"), float("nan")))
        lines.append(f"| {band} power ({low:g}-{high:g} Hz, dB) | {row['synthetic_db']:.2f} | {row['real_db']:.2f} "
                     f"| {row['difference_db']:+.2f} |")
    s = report["slope"]
    lines.append(f"| spectral slope 2-40 Hz | {s['synthetic_mean']:.2f} ± {s['synthetic_std']:.2f} "
                 f"| {s['real_mean']:.2f} ± {s['real_std']:.2f} | {s['synthetic_mean'] - s['real_mean']:+.2f} |")
    c = report["classifier"]
    lines.append(f"| two-sample accuracy ({c['folds']}-fold, 0.5 = indistinguishable) | "
                 f"{c['n_segments_per_class']} segments | {c['n_segments_per_class']} segments "
                 f"| {c['accuracy']:.3f} ± {c['accuracy_std']:.3f} |")
    return "\n".join(lines)


def _plot_traces(ax, item: Any, title: str, channel_names: Sequence[str] | None, seconds: float, max_channels: int):
    """Up to `max_channels` channels of one item, the first `seconds`, stacked with a shared offset."""
    x = _as_signal(item)[:max_channels, : int(seconds * SAMPLING_RATE)]
    spacing = 4 * float(np.median(x.std(-1))) or 1.0
    t = np.arange(x.shape[-1]) / SAMPLING_RATE
    for i, channel in enumerate(x):
        ax.plot(t, channel - channel.mean() - i * spacing, lw=0.6, color="k")
    names = list(channel_names)[: len(x)] if channel_names is not None else [f"ch{i}" for i in range(len(x))]
    ax.set_yticks(-spacing * np.arange(len(names)), names + [""] * (len(x) - len(names)))
    ax.set_title(f"{title} (offset {spacing:.0f} µV)")
    ax.set_xlabel("time (s)")


def _plot_psd(ax, items: Sequence[Any], label: str, color: str):
    """Mean Welch PSD over 4-s channel segments (whole channels when none is that long), 10-90% band."""
    segments, _ = channel_segments(items)
    if not len(segments):
        segments = [_as_signal(item) for item in items]
        shortest = min(s.shape[-1] for s in segments)
        segments = np.concatenate([s[:, :shortest] for s in segments])
    frequencies, psd = welch_psd(segments)
    keep = (frequencies >= 0.5) & (frequencies <= 45)
    frequencies, psd = frequencies[keep], np.maximum(psd[:, keep], POWER_FLOOR)
    low, high = np.percentile(psd, [10, 90], axis=0)
    ax.fill_between(frequencies, low, high, color=color, alpha=0.2, lw=0)
    ax.semilogy(frequencies, psd.mean(0), color=color, label=f"{label} ({len(psd)} segments)")


def plot_realism(synthetic: Sequence[Any], real: Sequence[Any], path: str | Path,
                 channel_names: Sequence[str] | None = None, seconds: float = 5.0, max_channels: int = 4) -> Path:
    """Write a PNG comparing synthetic with real EEG (lists of `[C, T]` arrays, µV at 200 Hz); returns its path.

    Panels: (a) the first `seconds` of up to `max_channels` channels of the first synthetic and the first
    real item (`channel_names` label their rows); (b) mean Welch PSD over 4-s channel segments, log scale,
    with the 10-90% range across segments shaded; (c) mean band power (dB) per band, synthetic and real.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not len(synthetic) or not len(real):
        raise ValueError("plot_realism needs at least one synthetic and one real item")
    figure = Figure(figsize=(13, 8), layout="constrained")
    grid = figure.add_gridspec(2, 2)
    _plot_traces(figure.add_subplot(grid[0, 0]), synthetic[0], "(a) synthetic", channel_names, seconds, max_channels)
    _plot_traces(figure.add_subplot(grid[0, 1]), real[0], "(a) real", channel_names, seconds, max_channels)

    ax = figure.add_subplot(grid[1, 0])
    _plot_psd(ax, real, "real", "tab:blue")
    _plot_psd(ax, synthetic, "synthetic", "tab:orange")
    ax.set(title="(b) Welch PSD, mean and 10-90% across segments", xlabel="frequency (Hz)", ylabel="µV²/Hz")
    ax.legend()

    ax = figure.add_subplot(grid[1, 1])
    positions = np.arange(len(BANDS))
    for offset, (label, items, color) in zip((-0.2, 0.2), (("real", real, "tab:blue"),
                                                          ("synthetic", synthetic, "tab:orange"))):
        ax.bar(positions + offset, _pooled(items, band_powers).mean(0), width=0.4, label=label, color=color)
    ax.set_xticks(positions, list(BANDS))
    ax.set(title="(c) mean band power", ylabel="dB re 1 µV²")
    ax.legend()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


__all__ = [
    "BANDS",
    "FEATURE_NAMES",
    "band_powers",
    "bigram_nll",
    "channel_segments",
    "cross_validated_accuracy",
    "format_realism",
    "plot_realism",
    "realism_report",
    "row_streams",
    "segment_features",
    "spectral_slope",
    "two_sample_accuracy",
    "unigram_nll",
    "welch_psd",
]


# ---------------------------------------------------------------------------------------------------
# Whole-model report
# ---------------------------------------------------------------------------------------------------

STANDARD_1020 = ["fp1", "fp2", "f7", "f3", "fz", "f4", "f8", "t3", "c3", "cz", "c4", "t4", "t5", "p3", "pz", "p4", "t6",
                 "o1", "o2"]


@torch.no_grad()
def sample_eeg(model, tokenizer, channel_names: Sequence[str], seconds: int, num_samples: int, seed: int = 0,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> list[np.ndarray]:
    """`num_samples` synthetic recordings [C, seconds * 200] in microvolts: LBM codes decoded by the tokenizer
    (with `normalize_phase=True`, so that the amplitude is realistic rather than MSE-optimal)."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_samples):
        out = model.generate(list(channel_names), num_patches=seconds, temperature=temperature, top_k=top_k,
                             top_p=top_p, generator=generator)
        eeg = tokenizer.decode(out["codes"], list(channel_names), scale_codes=out["scale_codes"], normalize_phase=True)
        samples.append(eeg[0].cpu().numpy())
    return samples


def evaluate_lbm(model, tokenizer, train_codes, validation_codes, real_windows: Sequence[np.ndarray],
                 num_samples: int = 16, seconds: int = 8, channel_names: Sequence[str] = STANDARD_1020,
                 seed: int = 0, figure: str | Path | None = None) -> dict:
    """Validation NLL against unigram/bigram baselines, and realism of samples against real validation EEG.

    `train_codes` / `validation_codes`: code datasets (`load_codes`); `real_windows`: real EEG [C, T] in
    microvolts at 200 Hz. Returns a JSON-serialisable dict; writes the realism figure when `figure` is given.
    """
    from .training import validation_nll

    sizes = model.config.code_layout.stream_vocab_sizes
    results = {
        "lbm": validation_nll(model.eval(), validation_codes),
        "unigram": unigram_nll(train_codes, validation_codes, sizes),
        "bigram": bigram_nll(train_codes, validation_codes, sizes),
    }
    for name in ("unigram", "bigram"):
        results[name] = {k: v for k, v in results[name].items() if k in ("bits_per_code", "bits_per_position")}
    synthetic = sample_eeg(model, tokenizer, channel_names, seconds, num_samples, seed)
    results["realism"] = realism_report(synthetic, list(real_windows), seed=seed)
    results["samples"] = {"num_samples": num_samples, "seconds": seconds, "channels": list(channel_names)}
    if figure is not None:
        results["figure"] = str(plot_realism(synthetic, list(real_windows), figure, channel_names=list(channel_names)))
    return results


def format_nll(results: dict) -> str:
    """Markdown table: validation NLL of the LBM and the baselines."""
    lines = ["| model | bits/code | bits/position |", "|---|---|---|"]
    for name in ("lbm", "unigram", "bigram"):
        row = results[name]
        lines.append(f"| {name} | {row['bits_per_code']:.3f} | {row['bits_per_position']:.1f} |")
    return "\n".join(lines)
