"""PNG figures of the user-facing commands: traces + PSD of a (synthetic or reconstructed) recording."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import signal as scipy_signal


def _welch(x: np.ndarray, sampling_rate: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD along the last axis, 1-s Hann segments (1 Hz bins): (frequencies [F] Hz, psd [..., F] µV^2/Hz)."""
    return scipy_signal.welch(x, fs=sampling_rate, nperseg=min(int(sampling_rate), x.shape[-1]), axis=-1)

TRAINING_PSD = Path(__file__).resolve().parents[1] / "lbm" / "pretrained" / "lbm-small" / "training_psd.json"


def load_training_psd(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(frequencies [F] Hz, PSD [F] µV²/Hz) of the training EEG from `training_psd.json`, or None if absent.

    The file holds `{"frequencies_hz": [...], "mean_log10_psd": [...], "p10_log10_psd", "p90_log10_psd"}`
    (see `compute_training_psd`); the curve returned is 10 ** mean_log10_psd (the geometric mean)."""
    path = Path(path) if path is not None else TRAINING_PSD
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if "mean_log10_psd" in data:
        return np.asarray(data["frequencies_hz"], dtype=float), 10 ** np.asarray(data["mean_log10_psd"], dtype=float)
    return np.asarray(data["frequencies"], dtype=float), np.asarray(data["psd"], dtype=float)


def compute_training_psd(data_dir: str | Path, output: str | Path, split: str = "train",
                         max_windows: int | None = None) -> Path:
    """Welch PSD (1-s Hann windows, µV²/Hz) of every channel of every real window of a prepared dataset split
    (`neurorvq prepare`), summarised per frequency as the mean, 10th and 90th percentile of log10 PSD and
    written as JSON `{"description", "frequencies_hz", "mean_log10_psd", "p10_log10_psd", "p90_log10_psd",
    "num_channel_windows"}`."""
    from neurorvq.tokenizer.data import load_prepared

    logs, frequencies = [], None
    for i, row in enumerate(load_prepared(data_dir, split)):
        if max_windows is not None and i >= max_windows:
            break
        x = np.asarray(row["input_values"], dtype=np.float64)[:, : int(row["valid_samples"])]
        if x.shape[-1] < 200:
            continue
        frequencies, psd = _welch(x)
        logs.append(np.log10(np.maximum(psd, 1e-20)))
    if not logs:
        raise ValueError(f"no window of at least 1 s in {data_dir} ({split})")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    logs = np.concatenate(logs)
    output.write_text(json.dumps({
        "description": f"Welch PSD (Hann, 200-sample segments) of every channel of every window of {data_dir} "
                       f"({split}), microvolts^2/Hz",
        "frequencies_hz": frequencies.tolist(), "mean_log10_psd": logs.mean(0).tolist(),
        "p10_log10_psd": np.percentile(logs, 10, axis=0).tolist(),
        "p90_log10_psd": np.percentile(logs, 90, axis=0).tolist(), "num_channel_windows": int(len(logs))}))
    return output


def plot_recording(eeg: np.ndarray, channel_names: Sequence[str], path: str | Path, title: str = "synthetic EEG",
                   sampling_rate: float = 200.0, reference: tuple[np.ndarray, np.ndarray] | None = None,
                   reference_label: str = "training data (geometric mean)", other: np.ndarray | None = None,
                   other_label: str = "original", max_channels: int = 19, max_seconds: float = 10.0) -> Path:
    """Traces (first `max_seconds`, channels offset) and the Welch PSD (geometric mean over channels) of `eeg` [C, T] µV, with
    an optional reference PSD (frequencies, psd) and an optional second recording `other` [C, T] µV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    from ._eeg import display_name

    eeg = np.asarray(eeg, dtype=np.float64)
    c = min(len(channel_names), max_channels)
    n = min(eeg.shape[-1], int(max_seconds * sampling_rate))
    t = np.arange(n) / sampling_rate
    spacing = 4 * float(np.median(eeg[:c, :n].std(axis=1))) + 1e-6
    fig, (traces, spectrum) = plt.subplots(1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [2, 1]})
    for i in range(c):
        offset = -i * spacing
        if other is not None:
            traces.plot(t, np.asarray(other)[i, :n] + offset, color="0.6", lw=0.6)
        traces.plot(t, eeg[i, :n] + offset, color="C0", lw=0.6)
    traces.set_yticks([-i * spacing for i in range(c)], [display_name(x) for x in channel_names[:c]])
    traces.set_xlabel("time (s)")
    traces.set_title(f"{title} (first {n / sampling_rate:g} s; spacing {spacing:.0f} µV)"
                     + ("; grey: " + other_label if other is not None else ""))
    frequencies, psd = _welch(eeg)
    keep = (frequencies >= 0.5) & (frequencies <= 45)
    geo = lambda p: 10 ** np.log10(np.maximum(p, 1e-20)).mean(0)  # noqa: E731  geometric mean over channels
    spectrum.semilogy(frequencies[keep], geo(psd)[keep], color="C0", label=title)
    if other is not None:
        f2, p2 = _welch(np.asarray(other, dtype=np.float64))
        k2 = (f2 >= 0.5) & (f2 <= 45)
        spectrum.semilogy(f2[k2], geo(p2)[k2], color="0.4", label=other_label)
    if reference is not None:
        rf, rp = reference
        rk = (rf >= 0.5) & (rf <= 45)
        spectrum.semilogy(rf[rk], np.maximum(rp[rk], 1e-20), color="C3", label=reference_label)
    else:
        spectrum.text(0.02, 0.02, "no training PSD available", transform=spectrum.transAxes, fontsize=8)
    spectrum.set_xlabel("frequency (Hz)")
    spectrum.set_ylabel("PSD (µV²/Hz), geometric mean over channels")
    spectrum.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
