"""A quick realism summary of synthetic EEG against real EEG for sets of mixed montages, and its markdown table.

Every channel of every item is pooled (band powers in dB re 1 µV^2, 2-40 Hz slope, amplitude, inter-channel
correlation, seams at 1-s edges), with the `lbm.realism` band-power classifier on the items of the most common
channel count. Items are `[C, T]` arrays in microvolts at 200 Hz. For a test with grouped folds and real-vs-real
floors use `lbm.realism.realism_report`. Imports no model.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from ..tokenizer.configuration_neurorvq import SAMPLING_RATE
from ..tokenizer.metrics import BANDS, BLOCK_SIZE, seam_ratio
from .realism import format_report
from .realism_classifiers import two_sample_test
from .realism_data import as_signal
from .realism_metrics import band_powers, mean_abs_correlation, spectral_slope

SEGMENT_SECONDS = 4.0  # window length of the pooled summary's classifier and PSD panel


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


__all__ = ["SEGMENT_SECONDS", "format_realism", "pooled_realism"]
