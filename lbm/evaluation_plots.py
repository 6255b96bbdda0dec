"""Figures of `lbm.evaluation`: PNGs drawn with matplotlib's Agg canvas (`lbm.realism_plots` has the realism report's).

- `plot_realism`: synthetic beside real EEG (lists of `[C, T]` arrays, µV at 200 Hz, any montages): traces, mean
  Welch PSD with its 10-90% range, mean band powers (the figure of `evaluate_lbm` and of the pooled summary,
  `lbm.realism_pooled`);
- `plot_learning_curve`: an LBM run's training and validation bits per position beside the count models
  (`lbm.count_models`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..tokenizer.configuration_neurorvq import SAMPLING_RATE
from ..tokenizer.metrics import BANDS
from .count_models import COUNT_MODELS
from .realism_data import as_signal, cut_windows
from .realism_metrics import POWER_FLOOR, band_powers, welch_psd
from .realism_plots import _figure, _save
from .realism_pooled import SEGMENT_SECONDS, _pooled


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
    if not len(synthetic) or not len(real):
        raise ValueError("plot_realism needs at least one synthetic and one real item")
    figure = _figure((13, 8))
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
    return _save(figure, path)


def plot_learning_curve(log_path: str | Path, results: dict, path: str | Path) -> Path:
    """Training and validation bits per position against optimizer steps (from a run's `log.jsonl`), with the
    count models of [`evaluate_lbm`] `results` as horizontal lines; writes a PNG and returns its path."""
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    streams = len(results["unigram"].get("bits_per_stream", [])) or round(
        results["unigram"]["bits_per_position"] / results["unigram"]["bits_per_code"])
    train = [(r["step"], r["bits_per_code"] * streams) for r in records if "bits_per_code" in r]
    validation = [(r["step"], r["eval/bits_per_position"]) for r in records if "eval/bits_per_position" in r]
    figure = _figure((8, 4.5))
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
    return _save(figure, path)


__all__ = ["plot_learning_curve", "plot_realism"]
