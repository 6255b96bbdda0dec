"""The report of a tokenizer evaluation (`tokenizer.evaluation.evaluate_tokenizer`): one PNG figure, drawn with
matplotlib's Agg canvas, and a markdown table.

- `plot_evaluation`: original vs reconstruction traces, Welch PSDs (µV²/Hz) beside the DCT reference codec, and the
  rate-distortion curves (z-scored MSE against bits per channel-second);
- `format_table`: the tokenizer and the DCT codec at the same rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import signal as scipy_signal

from .dct_codec import DCTCodec
from .metrics import BANDS
from .windows import load_windows


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

    from .evaluation import reconstruct_windows  # here, not at the top: evaluation re-exports this module's names

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


__all__ = ["format_table", "plot_evaluation"]
