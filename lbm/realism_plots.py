"""Figures of a realism report (`lbm.realism.realism_report`): PNGs drawn with matplotlib's Agg canvas.

- `plot_accuracies`: every two-sample classifier's accuracy, synthetic beside its real-vs-real floor and chance;
- `plot_topomaps`: per band, the topography (channel's mean log band power minus the mean over channels, dB) of the
  reference, of the synthetic set and their difference, as MNE topomaps (positions of the standard 10-05 montage;
  channels without a position are left out);
- `plot_correlations`: mean 1-40 Hz inter-channel correlation matrices of the reference and the synthetic set and
  their difference;
- `plot_spectra`: mean channel PSD (log-log) of each set with its 2-40 Hz slope, and band power differences (dB)
  of the synthetic set and of the floor set against the reference.

`plot_report` writes all four into a folder. Inputs are the report dict only (its `maps` and `metrics`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

COLORS = {"real": "tab:blue", "synthetic": "tab:orange", "other_real": "tab:green", "floor": "tab:gray"}
SET_LABELS = {"real": "reference (real)", "synthetic": "synthetic", "other_real": "other real subjects"}


def _figure(size: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def _save(figure, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def _standard_montage():
    import mne

    with warnings.catch_warnings():  # MNE 1.13 renames standard_1005; either name gives the same positions
        warnings.simplefilter("ignore", FutureWarning)
        for name in ("standard_1005", "colin27_1005"):
            try:
                return mne.channels.make_standard_montage(name)
            except ValueError:
                continue
    raise ValueError("MNE has no 10-05 standard montage")


def channel_positions(channel_names: Sequence[str]):
    """An `mne.Info` with 10-05 positions for the channels that have one (names matched case-insensitively, e.g.
    "fp1" -> "Fp1", "t3" -> "T3"), and the indices of those channels in `channel_names`."""
    import mne

    montage = _standard_montage()
    canonical = {name.lower(): name for name in montage.ch_names}
    kept = [i for i, name in enumerate(channel_names) if name.lower() in canonical]
    if len(kept) < 3:
        return None, kept
    info = mne.create_info([canonical[channel_names[i].lower()] for i in kept], 200.0, "eeg")
    info.set_montage(montage)
    return info, kept


def plot_accuracies(report: dict, path: str | Path) -> Path:
    """Horizontal bars: accuracy of each classifier on synthetic vs reference and on the floor (mean ± std over
    repeats), with chance marked."""
    rows = [(key, row) for key, row in report["metrics"].items() if row["kind"] == "c2st"]
    figure = _figure((8, 1.2 + 0.45 * max(len(rows), 1)))
    ax = figure.subplots()
    positions = np.arange(len(rows))
    for offset, side, color in ((-0.2, "synthetic", COLORS["synthetic"]), (0.2, "floor", COLORS["floor"])):
        values = [np.nan if row[side] is None else row[side] for _, row in rows]
        errors = [0 if row[f"{side}_std"] is None else row[f"{side}_std"] for _, row in rows]
        ax.barh(positions + offset, values, height=0.4, xerr=errors, color=color,
                label="synthetic vs reference" if side == "synthetic" else "floor: real vs real")
    ax.axvline(report["chance"], color="k", ls="--", lw=1, label="chance")
    ax.set_yticks(positions, [row["label"].replace("C2ST ", "") for _, row in rows])
    ax.invert_yaxis()
    ax.set_xlim(0.3, 1.0)
    ax.set_xlabel("held-out accuracy (grouped folds)")
    ax.set_title("Two-sample accuracy: synthetic (orange) beside its floor (gray)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_topomaps(report: dict, path: str | Path) -> Path:
    """Rows reference / synthetic / synthetic - reference, one column per band: each channel's mean log band power
    minus the mean over channels (dB). Reference and synthetic share a colour scale per band."""
    import mne

    maps = report["maps"]
    names, bands = maps["channel_names"], maps["bands"]
    info, kept = channel_positions(names)
    figure = _figure((2.3 * len(bands) + 1, 7))
    axes = figure.subplots(3, len(bands), squeeze=False)
    if info is None:
        figure.suptitle("fewer than three channels have a 10-05 position: no topomap")
        return _save(figure, path)
    reference = np.asarray(maps["deviation_db"]["real"])[kept]
    synthetic = np.asarray(maps["deviation_db"]["synthetic"])[kept]
    for b, band in enumerate(bands):
        limit = float(np.abs(np.concatenate([reference[:, b], synthetic[:, b]])).max()) or 1.0
        difference = synthetic[:, b] - reference[:, b]
        for row, (data, title, vlim) in enumerate(((reference[:, b], "reference", limit),
                                                   (synthetic[:, b], "synthetic", limit),
                                                   (difference, "synthetic - reference",
                                                    float(np.abs(difference).max()) or 1.0))):
            ax = axes[row, b]
            image, _ = mne.viz.plot_topomap(data, info, axes=ax, show=False, cmap="RdBu_r", vlim=(-vlim, vlim),
                                            contours=0, sensors=True)
            figure.colorbar(image, ax=ax, shrink=0.7, label="dB")
            ax.set_title(f"{band}: {title}", fontsize=9)
        r = report["metrics"].get(f"topography_r/{band}", {})
        if r.get("synthetic") is not None:
            axes[2, b].set_xlabel(f"r = {r['synthetic']:.2f} (floor {r['floor']:.2f})", fontsize=9)
    left_out = [n for i, n in enumerate(names) if i not in kept]
    figure.suptitle("Topography: channel log band power minus the channel mean"
                    + (f" (no position: {', '.join(left_out)})" if left_out else ""))
    return _save(figure, path)


def plot_correlations(report: dict, path: str | Path) -> Path:
    """Mean 1-40 Hz correlation matrices (reference, synthetic) and their difference, channels in report order."""
    maps = report["maps"]
    names = maps["channel_names"]
    reference, synthetic = np.asarray(maps["correlation"]["real"]), np.asarray(maps["correlation"]["synthetic"])
    figure = _figure((15, 4.8))
    axes = figure.subplots(1, 3)
    difference = synthetic - reference
    limit = float(np.abs(difference).max()) or 1.0
    error = report["metrics"].get("correlation_error/broadband", {})
    for ax, data, title, vlim in ((axes[0], reference, "reference", 1.0), (axes[1], synthetic, "synthetic", 1.0),
                                  (axes[2], difference, "synthetic - reference", limit)):
        image = ax.imshow(data, cmap="RdBu_r", vmin=-vlim, vmax=vlim)
        figure.colorbar(image, ax=ax, shrink=0.8, label="Pearson r" if vlim == 1.0 else "difference in r")
        ax.set_title(title)
        if len(names) <= 32:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    if error.get("synthetic") is not None:
        axes[2].set_xlabel(f"mean abs difference {error['synthetic']:.3f} (floor {error['floor']:.3f})")
    figure.suptitle("Inter-channel correlation, 1-40 Hz (mean over windows)")
    return _save(figure, path)


def plot_spectra(report: dict, path: str | Path) -> Path:
    """(a) mean channel PSD of every set, log-log, with the 2-40 Hz slope in the legend; (b) band power difference
    from the reference (dB) of the synthetic set and of the floor set."""
    maps, metrics = report["maps"], report["metrics"]
    spectra = maps["spectra"]
    frequencies = np.asarray(spectra["frequencies"])
    figure = _figure((13, 4.8))
    ax, bars = figure.subplots(1, 2)
    positive = frequencies > 0
    for name in ("real", "other_real", "synthetic"):
        if name in spectra:
            slope = maps["slope"].get(name)
            label = SET_LABELS[name] + (f", slope {slope:.2f}" if slope is not None else "")
            ax.loglog(frequencies[positive], np.asarray(spectra[name])[positive], color=COLORS[name], label=label)
    ax.axvspan(2, 40, color="k", alpha=0.04, lw=0)
    ax.set(xlabel="frequency (Hz)", ylabel="µV²/Hz",
           title="(a) mean PSD over windows and channels (slope fit: 2-40 Hz)")
    ax.legend(fontsize=8)

    bands = maps["bands"]
    positions = np.arange(len(bands))
    for offset, side, color, label in ((-0.2, "synthetic", COLORS["synthetic"], "synthetic - reference"),
                                       (0.2, "floor", COLORS["floor"], "floor: real - reference")):
        values = [metrics[f"band_db/{band}"][side] for band in bands]
        bars.bar(positions + offset, [np.nan if v is None else v for v in values], width=0.4, color=color, label=label)
    bars.axhline(0, color="k", lw=0.8)
    bars.set_xticks(positions, bands)
    bars.set(ylabel="dB", title="(b) band power difference from the reference (mean over channels)")
    bars.legend(fontsize=8)
    return _save(figure, path)


def plot_report(report: dict, out_dir: str | Path) -> list[Path]:
    """Write c2st.png, topomaps.png, correlation.png and spectra.png into `out_dir`; returns their paths."""
    out = Path(out_dir)
    paths = [plot_spectra(report, out / "spectra.png"), plot_topomaps(report, out / "topomaps.png"),
             plot_correlations(report, out / "correlation.png")]
    if any(row["kind"] == "c2st" for row in report["metrics"].values()):
        paths.insert(0, plot_accuracies(report, out / "c2st.png"))
    return paths


__all__ = ["channel_positions", "plot_accuracies", "plot_correlations", "plot_report", "plot_spectra", "plot_topomaps"]
