"""EEG in and out of the realism report: checked sets of `[C, T]` items in microvolts, cut into windows, and the
loaders that make such sets from recordings (MNE) or a prepared dataset.

- `as_signal`, `cut_windows`: one item as float64 `[C, T]`; items cut into non-overlapping windows `[N, C, L]`;
- `_check_rate`, `_check_channel_names`, `_window_length`, `_as_items`, `_window_set`: the argument checks every
  entry point of `lbm.realism` shares, and a set cut into windows with a group id per window (`_WindowSet`);
- `EEGSet`, `prepared_set`, `load_eeg`: sets read from prepared rows, recording files or MNE objects;
- `_jsonable`: results as plain Python types for `json.dumps`.

Imports no model (numpy / scipy / torch tensors only; MNE and `datasets` when a loader needs them).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from scipy import signal as scipy_signal

SAMPLING_RATE = 200.0  # Hz, the rate of this project's EEG
MIN_SAMPLING_RATE = 100.0  # Hz: the bands reach 45 Hz
FLAT_STD = 1e-9  # µV: a channel this flat holds no EEG
MNE_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif", ".fif.gz", ".set", ".vhdr", ".cnt", ".mff", ".eeg.bin")


# ----------------------------------------------------------------------------------------------------
# One item, windows, resampling
# ----------------------------------------------------------------------------------------------------


def as_signal(x: Any) -> np.ndarray:
    """An EEG item as float64 `[C, T]` (a 1-D signal becomes one channel)."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[-1] < 2:
        raise ValueError(f"an EEG item must be [C, T] with T >= 2, got shape {x.shape}")
    return x


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


def _resample(windows: np.ndarray, rate: float, target: float) -> np.ndarray:
    """Polyphase resampling along time (anti-aliased), `rate` -> `target` Hz."""
    if rate == target:
        return windows
    ratio = Fraction(target / rate).limit_denominator(1000)
    return scipy_signal.resample_poly(windows, ratio.numerator, ratio.denominator, axis=-1)


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
# Loading sets: prepared datasets, MNE recordings
# ----------------------------------------------------------------------------------------------------


@dataclass
class EEGSet:
    """A set of EEG items for the report: `signals` (list of `[C, T]` µV), their `channel_names` (C), the
    `sampling_rate` (Hz), a group id per item (subject / recording), where each item came from and, for prepared
    rows, each item's `labels` (its brain state, "" when unlabelled; None for a set read from recordings)."""

    signals: list[np.ndarray]
    channel_names: list[str]
    sampling_rate: float
    groups: list[str]
    sources: list[str]
    labels: list[str] | None = None

    def __len__(self) -> int:
        return len(self.signals)


def prepared_set(rows: Iterable[dict], channel_names: Sequence[str] | None = None, exclude_groups: Iterable[str] = (),
                 sampling_rate: float = SAMPLING_RATE) -> EEGSet:
    """Windows of prepared rows (`neurorvq prepare`: `input_values` [C][T] µV at 200 Hz, `valid_samples`,
    `channel_names`, `subject_id`, `label`) that have every channel of `channel_names` (default: the most common
    montage), reordered to it, grouped by `subject_id`; rows of `exclude_groups` are left out."""
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
    signals, groups, sources, labels = [], [], [], []
    for i, row in zip(keep, chosen):
        x = np.asarray(row["input_values"], dtype=np.float64)[:, : int(row["valid_samples"])]
        signals.append(x[[lowered[i].index(n) for n in wanted]])
        groups.append(str(subjects[i]))
        sources.append(str(row.get("recording_id", subjects[i])))
        labels.append(row.get("label") or "")  # rows prepared before labels existed have none
    if sampling_rate != SAMPLING_RATE:
        signals = [_resample(x, SAMPLING_RATE, float(sampling_rate)) for x in signals]
    return EEGSet(signals, wanted, float(sampling_rate), groups, sources, labels)


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


def _recordings(path: Path) -> Iterator[tuple[Any, str]]:
    """(MNE Raw or Epochs, file name) of every recording at `path` (a file or a folder), read one at a time."""
    import mne

    from ..tokenizer.feature_extraction_neurorvq import read_recording

    for file in _recording_files(path):
        if file.name.lower().endswith(("-epo.fif", "_epo.fif", "-epo.fif.gz")):
            yield mne.read_epochs(file, preload=True, verbose="error"), file.name
        else:
            yield read_recording(file), file.name


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


def _mne_items(inst, rate: float, wanted: list[str] | None, source: str) -> tuple[list[np.ndarray], list[str]]:
    """The items of an MNE Raw (one item) or Epochs (one item per epoch): `[C, T]` µV at `rate` Hz in `wanted`
    order, and the channel names (`wanted`, or every EEG channel of `inst` when None)."""
    import mne

    if inst.info["sfreq"] != rate:
        inst = inst.copy().load_data().resample(rate, verbose="error") if isinstance(inst, mne.io.BaseRaw) \
            else inst.copy().resample(rate, verbose="error")
    data, wanted = _eeg_of(inst, wanted, source)
    return (list(data) if data.ndim == 3 else [data]), wanted


def _group_of(label: str, pattern: re.Pattern | None) -> str:
    """The group of recording `label` (a file name): its match of `pattern` (the first group if it has one), or
    the name itself without a pattern."""
    if pattern is None:
        return label
    found = pattern.search(label)
    if not found:
        raise ValueError(f"--group-pattern {pattern.pattern!r} does not match {label!r}")
    return found.group(1) if pattern.groups else found.group(0)


def load_eeg(source: Any, channel_names: Sequence[str] | None = None, sampling_rate: float = SAMPLING_RATE,
             split: str = "validation", group_pattern: str | None = None) -> EEGSet:
    """Read a set of EEG for the report.

    `source`: an `mne.io.Raw` or `mne.Epochs`, a recording file MNE reads (`mne.io.read_raw`; `-epo.fif` files as
    epochs), a folder of them (searched recursively), a prepared dataset folder (`neurorvq prepare`; `split` picks
    the split, groups are subjects) or a list of any of these. Signals become µV (MNE holds Volts), resampled to
    `sampling_rate`; the EEG channels are picked by name (`channel_names`, case-insensitive; default: those of the
    first recording, which every other must have). A recording is one item (an epoch of Epochs is one item) and its
    group is the file name's match of `group_pattern` (a regular expression; its first group if it has one, e.g.
    `Subject\\d+` groups the EEGMAT files of one subject) or else the file name. `labels` are the prepared rows'
    when every item came from a prepared dataset, else None.
    """
    import mne

    rate = _check_rate(sampling_rate)
    wanted = None if channel_names is None else [str(n).lower() for n in channel_names]
    pattern = re.compile(group_pattern) if group_pattern else None
    signals, groups, sources, labels = [], [], [], []
    for part in list(source) if isinstance(source, (list, tuple)) else [source]:
        if isinstance(part, (mne.io.BaseRaw, mne.BaseEpochs)):
            filenames = [f for f in (getattr(part, "filenames", None) or []) if f]
            recordings = [(part, Path(filenames[0]).name if filenames else f"item{len(signals)}")]
        elif _is_prepared(Path(part)):
            from ..tokenizer.data import load_prepared

            prepared = prepared_set(load_prepared(Path(part), split), wanted, sampling_rate=rate)
            wanted = prepared.channel_names
            signals += prepared.signals
            groups += prepared.groups
            sources += prepared.sources
            labels += prepared.labels
            continue
        else:
            recordings = _recordings(Path(part))
        for inst, label in recordings:
            items, wanted = _mne_items(inst, rate, wanted, label)
            signals += items
            groups += [_group_of(label, pattern)] * len(items)
            sources += [label] * len(items)
            labels += [None] * len(items)
    if not signals:
        raise ValueError(f"no EEG item found in {source}")
    return EEGSet(signals, list(wanted), rate, groups, sources, None if None in labels else labels)


# ----------------------------------------------------------------------------------------------------
# Results as JSON
# ----------------------------------------------------------------------------------------------------


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


__all__ = ["EEGSet", "MIN_SAMPLING_RATE", "SAMPLING_RATE", "as_signal", "cut_windows", "load_eeg", "prepared_set"]
