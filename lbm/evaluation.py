"""Evaluate an LBM beyond its own likelihood: count baselines for the code NLL, and realism of generated EEG.

Two halves:

1. **Code baselines** (compare with `lbm.training.validation_nll`). Both are fitted on training rows and
   scored on validation rows of a code dataset (`lbm.data`), on real patches only (`valid_patches`):

   - `unigram_nll`: one code distribution per stream (stream order of `lbm.layout`);
   - `bigram_nll`: per stream, P(code at (patch a, channel c) | code of the same stream at (a - 1, c)),
     i.e. the same channel one second earlier; the first patch of a window falls back to the unigram.

   Both use add-one (Laplace) smoothing and report bits per code (mean over every scored code) and bits
   per position (bits per code x M streams), the units of `validation_nll`.

2. **Realism** of synthetic EEG against real EEG, through `lbm.realism` (two-sample tests with grouped folds,
   each figure beside its real-vs-real floor; see its docstring for how to read the numbers). `evaluate_lbm`
   samples the model and reports `lbm.realism.realism_report` of the samples (grouped by draw) against the
   validation windows of the montage (grouped by subject). Signals are `[C, T]` arrays in microvolts at 200 Hz.

   - `band_powers`, `spectral_slope`, `welch_psd`: per-channel spectra (from `lbm.realism`);
   - `pooled_realism`: a quick summary for sets of mixed montages (every channel of every item pooled: band dB,
     slope, amplitude, correlation, seams) with the `lbm.realism` band-power classifier on the items of the most
     common channel count;
   - `plot_realism`, `format_realism`: a figure and a markdown table.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..tokenizer.evaluation import BANDS, BLOCK_SIZE, SAMPLING_RATE, seam_ratio
from .layout import codes_to_positions
from .realism import (CLASSIFIERS, POWER_FLOOR, as_signal, band_powers, cut_windows, format_report,
                      mean_abs_correlation, prepared_set, realism_report as two_sample_realism_report,
                      spectral_slope, two_sample_test, welch_psd)
from .sampling import decode_generated, decoding_noise, generation_kwargs  # noqa: F401  (decode_generated: re-exported)

JOIN_JUMP = 3.0  # a join ratio above this is a visible jump where a continuation starts
SEGMENT_SECONDS = 4.0  # window length of the pooled summary's classifier and PSD panel

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


def _checked_streams(row: dict, vocab_sizes: np.ndarray) -> np.ndarray:
    """`row_streams(row)` after checking the number of streams and every code's range."""
    streams = row_streams(row)
    if streams.shape[-1] != len(vocab_sizes):
        raise ValueError(f"rows have {streams.shape[-1]} streams but {len(vocab_sizes)} stream_vocab_sizes were given")
    if streams.size and ((streams < 0).any() or (streams >= vocab_sizes).any()):
        raise ValueError("a code lies outside its stream's vocabulary")
    return streams


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
    model = _CountModel(_concatenated(_row_arrays(train_rows, sizes), sizes), sizes)
    target = _validation_codes(validation_rows, sizes)[0]
    return _nll_summary(-np.log2(model.unigram_probability(target)).sum(0), np.full(len(sizes), len(target)))


def _row_arrays(rows: Iterable[dict], sizes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per row, its real positions as arrays [N_row, M]: the codes, the same stream's code one second earlier on
    the same channel (previous second) and on the previous channel of the same second (previous channel); -1
    where there is none (first patch of a window, first channel of a patch)."""
    parts = []
    for row in rows:
        streams = _checked_streams(row, sizes)  # [A, C, M] (A = 0 for a row without real patches)
        none = np.full((1, *streams.shape[1:]), -1, dtype=streams.dtype)
        previous_second = np.concatenate((none, streams[:-1]))[: len(streams)]
        previous_channel = np.concatenate((none[:, :1].repeat(len(streams), 0), streams[:, :-1]), 1)
        parts.append(tuple(x.reshape(-1, len(sizes)) for x in (streams, previous_second, previous_channel)))
    return parts


def _concatenated(parts: list, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_row_arrays` parts joined: (codes, previous_second, previous_channel), each [N, M]."""
    if not parts:
        empty = np.zeros((0, len(sizes)), dtype=np.int64)
        return empty, empty, empty
    return tuple(np.concatenate(column) for column in zip(*parts))


def _validation_codes(rows: Iterable[dict], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = _concatenated(_row_arrays(rows, sizes), sizes)
    if not len(arrays[0]):
        raise ValueError("no real validation patch to score")
    return arrays


class _CountModel:
    """Per-stream code counts, unconditional and conditioned on a context code of the same stream."""

    def __init__(self, arrays: tuple[np.ndarray, np.ndarray, np.ndarray], sizes: np.ndarray):
        """`arrays`: (codes, previous_second, previous_channel) [N, M] of the training positions."""
        codes, previous_second, previous_channel = arrays
        contexts = {"previous_channel": previous_channel, "previous_second": previous_second}
        self.sizes = sizes
        self.offsets = np.cumsum(sizes) - sizes  # stream m's codes start at offsets[m]
        self.pair_offsets = np.cumsum(sizes ** 2) - sizes ** 2
        self.unigram = np.bincount((self.offsets + codes).ravel(), minlength=int(sizes.sum())).astype(np.float64)
        self.pairs, self.context_totals = {}, {}
        for name, context in contexts.items():
            seen = context >= 0
            index = (self.pair_offsets + np.maximum(context, 0) * sizes + codes)[seen]
            self.pairs[name] = np.bincount(index, minlength=int((sizes ** 2).sum())).astype(np.float64)
            self.context_totals[name] = np.bincount((self.offsets + np.maximum(context, 0))[seen],
                                                    minlength=int(sizes.sum())).astype(np.float64)

    def unigram_probability(self, codes: np.ndarray) -> np.ndarray:
        """Add-one unigram p(code) [N, M]."""
        totals = np.add.reduceat(self.unigram, self.offsets)
        return (self.unigram[self.offsets + codes] + 1.0) / (totals + self.sizes)

    def conditional_probability(self, name: str, codes: np.ndarray, context: np.ndarray, add: float) -> np.ndarray:
        """p(code | context code) [N, M] with add-`add` smoothing (NaN where there is no context)."""
        safe = np.maximum(context, 0)
        count = self.pairs[name][self.pair_offsets + safe * self.sizes + codes]
        total = self.context_totals[name][self.offsets + safe]
        with np.errstate(invalid="ignore", divide="ignore"):
            probability = (count + add) / (total + add * self.sizes)
        return np.where(context >= 0, probability, np.nan)


def _mixture_weights(candidates: np.ndarray, iterations: int = 50) -> np.ndarray:
    """EM weights of a mixture of fixed predictors: candidates [N, J] (probabilities of the observed codes,
    NaN = predictor unavailable, then its weight is shared among the others) -> weights [J]."""
    weights = np.full(candidates.shape[1], 1.0 / candidates.shape[1])
    available = ~np.isnan(candidates)
    values = np.nan_to_num(candidates)
    for _ in range(iterations):
        joint = values * weights * available
        responsibility = joint / joint.sum(1, keepdims=True).clip(min=1e-300)
        weights = responsibility.sum(0) / len(responsibility)
    return weights


def _mixture_probability(candidates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    available = ~np.isnan(candidates)
    scale = (weights * available).sum(1)
    return (np.nan_to_num(candidates) * weights * available).sum(1) / scale


def count_baselines(train_rows: Iterable[dict], validation_rows: Iterable[dict], stream_vocab_sizes: Sequence[int],
                    heldout_fraction: float = 0.1) -> dict:
    """The count models an LBM must beat, fitted on train rows and scored on validation rows:

    - `unigram`: add-one p(code) per stream;
    - `previous_channel`: add-one p(code | the same stream's code on the previous channel of the same second);
    - `previous_second`: add-one p(code | the same stream's code on the same channel one second earlier);
    - `interpolated`: per stream, a mixture of the unigram and the two conditional models (maximum-likelihood
      counts, so a pair seen often dominates), its weights fitted by EM on the last `heldout_fraction` of the
      train rows with counts from the rest, then applied with counts from all train rows.

    A position without a context (first channel or first second) is scored by the unigram in the conditional
    models and by the available predictors in the mixture. Each result has the keys of [`unigram_nll`].
    """
    sizes = np.asarray(stream_vocab_sizes, dtype=np.int64)
    parts = _row_arrays(train_rows, sizes)  # read once; the mixture weights use a held-out slice of it
    validation = _validation_codes(validation_rows, sizes)

    def predictors(model: _CountModel, arrays) -> list[np.ndarray]:
        target, second, channel = arrays
        return [model.unigram_probability(target), model.conditional_probability("previous_channel", target, channel, 0.0),
                model.conditional_probability("previous_second", target, second, 0.0)]

    # mixture weights on held-out train rows, per stream
    split = max(1, int(round(len(parts) * (1 - heldout_fraction))))
    heldout_arrays = _concatenated(parts[split:], sizes)
    heldout = None
    if len(heldout_arrays[0]):
        heldout = np.stack(predictors(_CountModel(_concatenated(parts[:split], sizes), sizes), heldout_arrays), -1)
    weights = np.array([_mixture_weights(heldout[:, m]) if heldout is not None else np.full(3, 1 / 3)
                        for m in range(len(sizes))])  # [M, 3]

    model = _CountModel(_concatenated(parts, sizes), sizes)
    target, second, channel = validation
    unigram = model.unigram_probability(target)
    results = {"unigram": unigram}
    for name, context in (("previous_channel", channel), ("previous_second", second)):
        conditional = model.conditional_probability(name, target, context, 1.0)
        results[name] = np.where(np.isnan(conditional), unigram, conditional)
    candidates = np.stack(predictors(model, validation), -1)  # [N, M, 3]
    results["interpolated"] = np.stack([_mixture_probability(candidates[:, m], weights[m]) for m in range(len(sizes))], 1)
    counts = np.full(len(sizes), len(target), dtype=np.int64)
    summary = {name: _nll_summary(-np.log2(p).sum(0), counts) for name, p in results.items()}
    summary["interpolated"]["weights"] = weights.tolist()
    return summary


def bigram_nll(train_rows: Iterable[dict], validation_rows: Iterable[dict], stream_vocab_sizes: Sequence[int]) -> dict:
    """Add-one bigram baseline: per stream, P(code(a, c) | code(a - 1, c)) of the same stream and channel (the
    `previous_second` model of [`count_baselines`]). The first patch of every validation window is scored with
    the (add-one) unigram. Same arguments and result keys as [`unigram_nll`]."""
    sizes = np.asarray(stream_vocab_sizes, dtype=np.int64)
    model = _CountModel(_concatenated(_row_arrays(train_rows, sizes), sizes), sizes)
    target, second, _ = _validation_codes(validation_rows, sizes)
    conditional = model.conditional_probability("previous_second", target, second, 1.0)
    probability = np.where(np.isnan(conditional), model.unigram_probability(target), conditional)
    return _nll_summary(-np.log2(probability).sum(0), np.full(len(sizes), len(target)))


# ----------------------------------------------------------------------------------------------------
# Pooled realism summary (mixed montages), table and figure
# ----------------------------------------------------------------------------------------------------


def _pooled(items: Sequence[Any], per_channel) -> np.ndarray:
    """`per_channel(item)` ([C, ...]) of every item, concatenated over channels."""
    if not len(items):
        raise ValueError("no EEG item given")
    return np.concatenate([per_channel(item) for item in items])


def _pooled_classifier(synthetic: Sequence[Any], real: Sequence[Any], folds: int, seed: int, repeats: int = 3) -> dict:
    """`lbm.realism.two_sample_test` (band-power classifier, each item its own group, 4-s windows) on the items of
    the most common channel count that both sets have; mean ± std over `repeats` seeds."""
    synthetic, real = [as_signal(x) for x in synthetic], [as_signal(x) for x in real]
    shared = Counter(len(x) for x in synthetic if any(len(y) == len(x) for y in real))
    length = int(SEGMENT_SECONDS * SAMPLING_RATE)
    result = {"accuracy": float("nan"), "accuracy_std": float("nan"), "n_segments_per_class": 0, "folds": folds}
    if not shared:
        return result
    channels = shared.most_common(1)[0][0]
    a = [x for x in synthetic if len(x) == channels and x.shape[-1] >= length]
    b = [x for x in real if len(x) == channels and x.shape[-1] >= length]
    if min(len(a), len(b)) < 2:
        return result
    runs = [two_sample_test(a, b, SAMPLING_RATE, classifier="bandpower", window_seconds=SEGMENT_SECONDS, folds=folds,
                            seed=seed + r) for r in range(repeats)]
    accuracies = [run["accuracy"] for run in runs]
    return {"accuracy": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
            "n_segments_per_class": runs[0]["n_windows_per_class"], "folds": runs[0]["folds"], "n_channels": channels}


def pooled_realism(synthetic: Sequence[Any], real: Sequence[Any], folds: int = 5, seed: int = 0) -> dict:
    """A quick realism summary of synthetic against real EEG (lists of `[C, T]` arrays, µV at 200 Hz; montages
    may differ between items). For a test with grouped folds and real-vs-real floors use `lbm.realism`.

    Returns a dict:
        `bands`: per band, `synthetic_db` / `real_db` (mean band power over every channel of every item,
            dB re 1 µV^2) and `difference_db` (synthetic - real);
        `slope`: `synthetic_mean`, `synthetic_std`, `real_mean`, `real_std` of the per-channel 2-40 Hz
            log-log slope;
        `amplitude`: median channel std (µV) of each and their `ratio` (synthetic / real);
        `correlation`: mean |inter-channel r| of each (mean over items);
        `seam`: median `seam_ratio` over items of each (squared steps across 1-s boundaries / within);
        `classifier`: `lbm.realism.two_sample_test` with its band-power classifier (every item its own group) on
            the items of the most common shared channel count: `accuracy` (0.5 = indistinguishable),
            `accuracy_std` (over 3 seeds), `n_segments_per_class` (4-s windows), `folds`;
        `n_items`, `n_channels`: per class.
    """
    synthetic_db, real_db = _pooled(synthetic, band_powers), _pooled(real, band_powers)
    synthetic_slope, real_slope = _pooled(synthetic, spectral_slope), _pooled(real, spectral_slope)
    bands = {band: {"synthetic_db": float(synthetic_db[:, i].mean()), "real_db": float(real_db[:, i].mean()),
                    "difference_db": float(synthetic_db[:, i].mean() - real_db[:, i].mean())}
             for i, band in enumerate(BANDS)}
    slope = {"synthetic_mean": float(synthetic_slope.mean()), "synthetic_std": float(synthetic_slope.std()),
             "real_mean": float(real_slope.mean()), "real_std": float(real_slope.std())}
    synthetic_std = float(np.median(_pooled(synthetic, lambda x: as_signal(x).std(-1))))
    real_std = float(np.median(_pooled(real, lambda x: as_signal(x).std(-1))))
    correlation = {name: float(np.nanmean([mean_abs_correlation(x) for x in items]))
                   for name, items in (("synthetic", synthetic), ("real", real))}
    seam = {name: float(np.nanmedian([seam_ratio(as_signal(x), BLOCK_SIZE) for x in items]))
            for name, items in (("synthetic", synthetic), ("real", real))}
    return {"bands": bands, "slope": slope,
            "amplitude": {"synthetic_std": synthetic_std, "real_std": real_std, "ratio": synthetic_std / real_std},
            "correlation": correlation, "seam": seam,
            "classifier": _pooled_classifier(synthetic, real, folds, seed),
            "n_items": {"synthetic": len(synthetic), "real": len(real)},
            "n_channels": {"synthetic": len(synthetic_db), "real": len(real_db)}}


realism_report = pooled_realism  # the benchmarks' name for the pooled summary; the two-sample report is lbm.realism's


def format_realism(report: dict) -> str:
    """A realism block as markdown: an `lbm.realism` report (what `evaluate_lbm` returns; `format_report`), a
    [`pooled_realism`] summary (one row per band, slope, amplitude, correlation, seams, classifier), or the reason
    it could not be computed."""
    if "metrics" in report:
        return format_report(report)
    if "error" in report:
        return f"realism not computed: {report['error']}"
    lines = ["| metric | synthetic | real | synthetic - real |", "|---|---|---|---|"]
    for band, row in report["bands"].items():
        low, high = BANDS.get(band, (float("nan"), float("nan")))
        lines.append(f"| {band} power ({low:g}-{high:g} Hz, dB) | {row['synthetic_db']:.2f} | {row['real_db']:.2f} "
                     f"| {row['difference_db']:+.2f} |")
    s = report["slope"]
    lines.append(f"| spectral slope 2-40 Hz | {s['synthetic_mean']:.2f} ± {s['synthetic_std']:.2f} "
                 f"| {s['real_mean']:.2f} ± {s['real_std']:.2f} | {s['synthetic_mean'] - s['real_mean']:+.2f} |")
    a = report["amplitude"]
    lines.append(f"| median channel std (µV) | {a['synthetic_std']:.2f} | {a['real_std']:.2f} | ratio {a['ratio']:.2f} |")
    r = report["correlation"]
    lines.append(f"| mean abs inter-channel r | {r['synthetic']:.3f} | {r['real']:.3f} | {r['synthetic'] - r['real']:+.3f} |")
    m = report["seam"]
    lines.append(f"| seam ratio (1-s boundaries / within) | {m['synthetic']:.2f} | {m['real']:.2f} | |")
    c = report["classifier"]
    lines.append(f"| two-sample accuracy ({c['folds']}-fold, 0.5 = indistinguishable) | "
                 f"{c['n_segments_per_class']} segments | {c['n_segments_per_class']} segments "
                 f"| {c['accuracy']:.3f} ± {c['accuracy_std']:.3f} |")
    return "\n".join(lines)


def _plot_traces(ax, item: Any, title: str, channel_names: Sequence[str] | None, seconds: float, max_channels: int):
    """Up to `max_channels` channels of one item, the first `seconds`, stacked with a shared offset."""
    x = as_signal(item)[:max_channels, : int(seconds * SAMPLING_RATE)]
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
    signals = [as_signal(item) for item in items]
    windows, _ = cut_windows(signals, int(SEGMENT_SECONDS * SAMPLING_RATE))
    segments = windows.reshape(-1, windows.shape[-1])  # every channel of every window
    if not len(segments):
        shortest = min(s.shape[-1] for s in signals)
        segments = np.concatenate([s[:, :shortest] for s in signals])
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
    "band_powers",
    "bigram_nll",
    "count_baselines",
    "evaluate_lbm",
    "format_realism",
    "mean_abs_correlation",
    "plot_realism",
    "pooled_realism",
    "realism_of_samples",
    "realism_report",
    "row_streams",
    "spectral_slope",
    "unigram_nll",
    "welch_psd",
]


# ---------------------------------------------------------------------------------------------------
# Whole-model report
# ---------------------------------------------------------------------------------------------------

from neurorvq.tokenizer.channels import STANDARD_1020  # noqa: E402  (re-exported: older callers import it here)


@torch.no_grad()
def sample_eeg(model, tokenizer, channel_names: Sequence[str], seconds: int, num_samples: int, seed: int = 0,
               temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
               **sampling) -> list[np.ndarray]:
    """`num_samples` synthetic recordings [C, seconds * 200] in microvolts: LBM codes (sampled as one batch)
    decoded by the tokenizer. Sampling options left None are the model's defaults (`sampling.generation_kwargs`)."""
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(list(channel_names), num_patches=seconds, generator=generator, batch_size=num_samples,
                         **generation_kwargs(model, temperature=temperature, top_k=top_k, top_p=top_p, **sampling))
    eeg = decode_generated(tokenizer, out, channel_names, generator, noise_filling=decoding_noise(model))
    return list(eeg.cpu().numpy())


def _window_signal(row: dict) -> np.ndarray:
    return np.asarray(row["input_values"], dtype=np.float32)[:, : int(row["valid_samples"])]


@torch.no_grad()
def prompt_specificity(model, tokenizer, rows: Sequence[dict], prompt_seconds: int = 4, seconds: int = 4,
                       seed: int = 0, temperature: float | None = None, top_p: float | None = None) -> dict:
    """Does a continuation stay the same recording? One prompt per recording (the first `prompt_seconds` of its
    first window long enough), continued for `seconds`, within groups of recordings that share a montage.

    Profile = log band powers per channel (dB, `band_powers`); distance = mean |difference| between the profile
    of a continuation and that of a prompt. Returns `specificity` (over prompts, the mean share of other prompts
    that are farther from the continuation than its own prompt: 0.5 = chance, 1 = always closest to its own),
    `top1` (share of continuations whose own prompt is the closest of all; chance 1 / number of prompts),
    `join_ratio` (median over prompts of the squared step across the prompt/continuation join over the median
    squared step within the continuation: 1 = no jump), `join_jumps` (share of continuations whose join ratio exceeds
    `JOIN_JUMP`: the tail the median hides) and `num_prompts`.
    """
    needed = (prompt_seconds + seconds) * SAMPLING_RATE
    by_montage: dict[tuple, dict[str, np.ndarray]] = {}
    for row in rows:
        x = _window_signal(row)
        names = tuple(row["channel_names"])
        recordings = by_montage.setdefault(names, {})
        if x.shape[-1] >= needed and row["recording_id"] not in recordings:
            recordings[row["recording_id"]] = x[:, :needed]
    generator = torch.Generator().manual_seed(seed)
    closer, top1, joins = [], [], []
    split = prompt_seconds * SAMPLING_RATE
    for names, recordings in by_montage.items():
        if len(recordings) < 2:
            continue
        signals = np.stack(list(recordings.values()))  # [R, C, T]
        # one second more than the prompt is encoded and dropped: a lapped (mdct) frame at the end of an encoded
        # signal is windowed as an end frame, which a continuation would not match
        encoded = tokenizer.encode(torch.from_numpy(signals[..., :split + SAMPLING_RATE]), list(names))
        out = model.generate(list(names), num_patches=seconds, prompt_codes=encoded.codes[..., :prompt_seconds],
                             prompt_scale_codes=encoded.scale_codes[..., :prompt_seconds], generator=generator,
                             **generation_kwargs(model, temperature=temperature, top_p=top_p))
        eeg = decode_generated(tokenizer, out, names, generator, prompt_seconds, decoding_noise(model)).numpy()
        prompts = [band_powers(x[:, :split]) for x in signals]
        for i, x in enumerate(eeg):
            continuation = band_powers(x[:, split:])
            distances = np.array([np.abs(continuation - prompt).mean() for prompt in prompts])
            closer.append(float((distances[i] < np.delete(distances, i)).mean()))
            top1.append(int(distances.argmin()) == i)
            steps = np.diff(x, axis=-1) ** 2
            joins.append(float(np.median(steps[:, split - 1]) / np.median(steps[:, split:])))
    if not closer:
        return {"specificity": float("nan"), "top1": float("nan"), "join_ratio": float("nan"), "join_jumps": float("nan"),
                "num_prompts": 0}
    return {"specificity": float(np.mean(closer)), "top1": float(np.mean(top1)),
            "join_ratio": float(np.median(joins)), "join_jumps": float(np.mean(np.asarray(joins) > JOIN_JUMP)),
            "num_prompts": len(closer)}


def realism_of_samples(synthetic: Sequence[np.ndarray], validation_rows, channel_names: Sequence[str],
                       train_rows=None, seed: int = 0, classifiers: Sequence[str] = CLASSIFIERS,
                       repeats: int = 3) -> dict:
    """`lbm.realism.realism_report` of synthetic samples (`[C, T]` µV at 200 Hz in `channel_names` order, each its
    own draw) against the prepared validation windows that have every channel of `channel_names` (grouped by
    `subject_id`). The floor: training windows of other subjects when `train_rows` is given (and holds at least two
    such subjects), else half of the validation subjects against the other half. A report that cannot be made
    (no window of the montage, too few subjects) is `{"error": reason}`."""
    try:
        reference = prepared_set(validation_rows, channel_names)
        if not len(reference):
            raise ValueError(f"no validation window has every channel of the montage {list(channel_names)}")
        other = None
        if train_rows is not None:
            other = prepared_set(train_rows, channel_names, exclude_groups=reference.groups)
            other = other if len(set(other.groups)) >= 2 else None
        return two_sample_realism_report(
            synthetic, reference.signals, reference.channel_names, SAMPLING_RATE, real_groups=reference.groups,
            other_real=other.signals if other else None, other_real_groups=other.groups if other else None,
            repeats=repeats, seed=seed, classifiers=classifiers)
    except ValueError as error:
        return {"error": str(error)}


def evaluate_lbm(model, tokenizer, train_codes, validation_codes, validation_rows: Sequence[dict],
                 num_samples: int = 32, seconds: int = 8, channel_names: Sequence[str] = STANDARD_1020,
                 seed: int = 0, temperature: float | None = None, top_p: float | None = None,
                 figure: str | Path | None = None, train_rows=None, realism_classifiers: Sequence[str] = CLASSIFIERS,
                 realism_repeats: int = 3) -> dict:
    """Validation NLL against the count models, realism of samples, and prompt specificity.

    `train_codes` / `validation_codes`: code datasets (`load_codes`); `validation_rows`: the prepared validation
    windows they came from (real EEG in µV, with `channel_names`, `subject_id` and `recording_id`). Samples use
    the montage `channel_names` (any model whose `generate(channel_names, num_patches=, batch_size=, generator=,
    temperature=)` returns codes the tokenizer decodes; sampling options left None are the model's defaults) and `results["realism"]` is [`realism_of_samples`]: the
    `lbm.realism` report against the validation windows of that montage, its floor from `train_rows` (prepared
    training windows, optional) of other subjects or else from half of the validation subjects against the other
    half. Returns a JSON-serialisable dict; writes the realism figure when `figure` is given.
    """
    from .training import validation_nll

    sizes = model.config.code_layout.stream_vocab_sizes
    results = {"lbm": validation_nll(model.eval(), validation_codes)}  # unconditional, like the count models
    if model.config.condition_names:  # each window given its own label
        results["lbm_conditional"] = validation_nll(model, validation_codes, conditional=True)
    for name, baseline in count_baselines(train_codes, validation_codes, sizes).items():
        results[name] = {k: v for k, v in baseline.items() if k in ("bits_per_code", "bits_per_position", "weights")}
    rows = list(validation_rows)
    synthetic = sample_eeg(model, tokenizer, channel_names, seconds, num_samples, seed, temperature, top_p=top_p)
    results["realism"] = realism_of_samples(synthetic, rows, channel_names, train_rows, seed, realism_classifiers,
                                            realism_repeats)
    results["samples"] = {"num_samples": num_samples, "seconds": seconds, "channels": list(channel_names),
                          "temperature": temperature, "top_p": top_p}
    results["prompt"] = prompt_specificity(model, tokenizer, rows, seed=seed, temperature=temperature, top_p=top_p)
    if figure is not None:
        real = prepared_set(rows, channel_names).signals or [_window_signal(r) for r in rows]
        results["figure"] = str(plot_realism(synthetic, real, figure, channel_names=list(channel_names)))
    return results


COUNT_MODELS = ("unigram", "previous_channel", "previous_second", "interpolated")


def plot_learning_curve(log_path: str | Path, results: dict, path: str | Path) -> Path:
    """Training and validation bits per position against optimizer steps (from a run's `log.jsonl`), with the
    count models of [`evaluate_lbm`] `results` as horizontal lines; writes a PNG and returns its path."""
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    streams = len(results["unigram"].get("bits_per_stream", [])) or round(
        results["unigram"]["bits_per_position"] / results["unigram"]["bits_per_code"])
    train = [(r["step"], r["bits_per_code"] * streams) for r in records if "bits_per_code" in r]
    validation = [(r["step"], r["eval/bits_per_position"]) for r in records if "eval/bits_per_position" in r]
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.subplots()
    if train:
        steps, bits = zip(*train)
        window = max(1, len(bits) // 40)  # a running mean: single batches differ by montage
        smooth = np.convolve(bits, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="tab:blue", lw=1, label="training (running mean)")
    if validation:
        ax.plot(*zip(*validation), "o-", color="tab:red", label="validation")
    for name, style in zip(COUNT_MODELS, (":", "--", "-.", "-")):
        ax.axhline(results[name]["bits_per_position"], color="gray", ls=style, lw=1, label=f"{name} (validation)")
    ax.set(xlabel="optimizer step", ylabel="bits per position", title="LBM learning curve")
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def format_nll(results: dict) -> str:
    """Markdown table: validation bits per position of the LBM and the count models, and gains over unigram."""
    unigram = results["unigram"]["bits_per_position"]
    lines = ["| model | bits/code | bits/position | gain over unigram (bits/position) |", "|---|---|---|---|"]
    for name in ("lbm", *COUNT_MODELS):
        row = results[name]
        lines.append(f"| {name} | {row['bits_per_code']:.3f} | {row['bits_per_position']:.2f} "
                     f"| {unigram - row['bits_per_position']:+.2f} |")
    if "prompt" in results:
        p = results["prompt"]
        jumps = f"; joins > {JOIN_JUMP:g}x: {p['join_jumps']:.2f}" if "join_jumps" in p else ""
        lines.append(f"\nprompt specificity {p['specificity']:.2f} (closest of all: {p['top1']:.2f}; "
                     f"join ratio {p['join_ratio']:.2f}{jumps}; {p['num_prompts']} prompts)")
    return "\n".join(lines)
