"""EEG recordings -> windowed `datasets` on disk (Arrow), split by subject; batching windows of equal shape.

One row per window: `input_values` [C][T] float32 microvolts at 200 Hz (T = A * 200), `valid_samples` (the
first `valid_samples` samples of every channel are real, the rest is zero padding), `channel_names`,
`recording_id`, `subject_id`, `source_sampling_rate`, `start_seconds`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .channels import BipolarChannelWarning
from .checks import SignalQualityWarning, UnitWarning
from .feature_extraction_neurorvq import (
    NeuroRVQFeatureExtractor,
    TruncatedRecordingWarning,
    rate_from_file_name,
    read_recording,
)

# Extensions that hold a recording MNE can open (companions like .fdt or .vmrk are opened through their header).
RECORDING_SUFFIXES = {".edf", ".bdf", ".gdf", ".set", ".fif", ".vhdr", ".cnt", ".mff", ".nxe", ".eeg", ".txt"}
# Subjects reserved for the project's hold-out set (shared/data/eeg/README.md): never prepared.
RESERVED_SUBJECTS = re.compile(r"(eegmat/Subject3[0-5]$)|(eegmmidb/S088$)", re.IGNORECASE)
_SUBJECT_PATTERNS = (re.compile(r"(Subject\d+)"), re.compile(r"\b(S\d{3})(?:R\d+)?\b"), re.compile(r"(sub-[A-Za-z0-9]+)"))
DATA_FORMAT_VERSION = 1


def find_recordings(inputs: Iterable[str | Path]) -> list[Path]:
    """Files (and files in folders, recursively) with a recording suffix, sorted; missing paths raise."""
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in RECORDING_SUFFIXES]
        elif path.is_file():
            found.append(path)
        else:
            raise ValueError(f"input not found: {path}")
    return sorted(set(found))


def subject_id(path: Path) -> str:
    """`dataset/subject` from a recording path: SubjectNN, SNNN (EEGMMIDB) or sub-XXX (BIDS) when present,
    else the folder: recordings of unknown provenance in one folder count as one subject (no leakage)."""
    for pattern in _SUBJECT_PATTERNS:
        for part in (path.stem, path.parent.name):
            match = pattern.search(part)
            if match:
                dataset = path.parent.parent.name if match.group(1) == path.parent.name else path.parent.name
                return f"{dataset}/{match.group(1)}"
    return f"{path.parent.name}/{path.parent.name}"


def _fingerprint(files: list[Path], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        digest.update(str(path.resolve()).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        for companion in path.parent.glob(path.stem + ".*"):  # e.g. EEGLAB .fdt data beside the .set header
            if companion != path and companion.suffix.lower() in {".fdt", ".vmrk", ".eeg", ".dat"}:
                digest.update(hashlib.sha256(companion.read_bytes()).digest())
    return digest.hexdigest()


def check_dataset_output(output_dir: Path, marker: str, inputs: Iterable[Path] = ()) -> None:
    """A dataset folder may be (re)written only when it is new, empty, or a dataset of the same kind (`marker`):
    never a folder of recordings or another command's output, and never one of the inputs."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output {output_dir} is a file: choose a folder for the dataset")
    resolved = output_dir.resolve()
    for path in inputs:
        if Path(path).resolve().parent == resolved or resolved in Path(path).resolve().parents:
            raise ValueError(f"output {output_dir} holds the input recording {path}: choose another --output folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / marker).is_file():
        raise ValueError(f"output {output_dir} is not empty and holds no dataset of this kind (no {marker}): "
                         "choose a new or empty --output folder, nothing was written")


def split_subjects(subjects: list[str], validation_fraction: float, seed: int) -> set[str]:
    """Deterministic choice of round(fraction x n) (at least 1 if fraction > 0) validation subjects."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    ordered = sorted(set(subjects), key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    count = 0 if validation_fraction == 0 else max(1, round(validation_fraction * len(ordered)))
    if count >= len(ordered) and validation_fraction > 0:
        raise ValueError(f"cannot hold out {count} of {len(ordered)} subjects and still train")
    return set(ordered[:count])


@dataclass
class PrepareReport:
    """What `prepare_dataset` did: counts per split, and every skipped file with the reason."""

    output_dir: str
    reused_cache: bool
    windows: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    truncated: list[tuple[str, str]] = field(default_factory=list)  # files that end before their header says


def prepare_dataset(
    inputs: Iterable[str | Path],
    output_dir: str | Path,
    feature_extractor: NeuroRVQFeatureExtractor | None = None,
    validation_fraction: float = 0.15,
    split_by: str = "subject",
    seed: int = 0,
    on_error: str = "raise",
    on_unknown_channel: str = "drop",
    text_channel_names: list[str] | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Preprocess recordings into a `DatasetDict` (train / validation) saved at `output_dir`.

    Args:
        inputs: files MNE reads (and `.txt` microvolt columns) or folders of them.
        feature_extractor: preprocessing and windowing (default: the released settings).
        validation_fraction: share of subjects (or recordings) held out for validation.
        split_by: `"subject"` or `"recording"`; never by window.
        on_error: `"raise"` (a clear error naming the file) or `"skip"` (warn, count, go on) for unreadable
            or corrupt files. Files with no EEG channel (annotation-only EDF, say) are always skipped and
            reported, as are `.txt` files when `text_channel_names` is not given.
        on_unknown_channel: `"drop"` (warn) or `"raise"` for channels outside the vocabulary.
        text_channel_names: labels of the columns of `.txt` recordings.

    Re-running with the same inputs (same bytes) and settings reuses `output_dir`; any change rebuilds it.
    """
    import datasets
    from tqdm.auto import tqdm

    if split_by not in ("subject", "recording"):
        raise ValueError(f"split_by must be 'subject' or 'recording', got {split_by!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    extractor = feature_extractor or NeuroRVQFeatureExtractor()
    output_dir = Path(output_dir)
    files = find_recordings(inputs)
    if not files:
        raise ValueError("no recording found in the inputs")
    settings = dict(version=DATA_FORMAT_VERSION, extractor=extractor.to_dict(), validation_fraction=validation_fraction,
                    split_by=split_by, seed=seed, on_error=on_error, on_unknown_channel=on_unknown_channel,
                    text_channel_names=text_channel_names)
    fingerprint = _fingerprint(files, settings)
    manifest_path = output_dir / "prepare_manifest.json"
    check_dataset_output(output_dir, "prepare_manifest.json", files)
    if manifest_path.is_file() and (output_dir / "dataset_dict.json").is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") == fingerprint:
            report = PrepareReport(str(output_dir), True, manifest["windows"], manifest["subjects"],
                                   [tuple(s) for s in manifest["skipped"]],
                                   [tuple(t) for t in manifest.get("truncated", [])])
            return report

    report = PrepareReport(str(output_dir), False)
    rows_by_file: list[tuple[Path, str, dict]] = []
    for path in tqdm(files, desc="preparing recordings", disable=not progress):
        subject = subject_id(path)
        if RESERVED_SUBJECTS.search(subject):
            report.skipped.append((str(path), "reserved hold-out subject"))
            warnings.warn(f"skipping {path}: subject {subject} is reserved for the hold-out set")
            continue
        is_text = path.suffix.lower() == ".txt"
        if is_text and not text_channel_names:
            report.skipped.append((str(path), "text file without channel labels (pass text_channel_names)"))
            warnings.warn(f"skipping {path}: its channel labels are unknown; pass text_channel_names")
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # read each file once: the extractor takes the Raw, and the Raw gives the source rate
                recording = path if is_text else read_recording(path)
                source_rate = (rate_from_file_name(path) or float("nan")) if is_text else float(recording.info["sfreq"])
                features = extractor(recording, channel_names=text_channel_names if is_text else None,
                                     on_unknown_channel=on_unknown_channel)
            for warning in caught:
                if issubclass(warning.category, TruncatedRecordingWarning):
                    report.truncated.append((str(path), str(warning.message)))
                if issubclass(warning.category, (TruncatedRecordingWarning, SignalQualityWarning, UnitWarning,
                                                 BipolarChannelWarning)) or "unknown" in str(warning.message).lower():
                    message = str(warning.message)
                    warnings.warn(message if str(path) in message else f"{path}: {message}", warning.category)
        except ValueError as error:
            message = str(error)
            if "no EEG channel" in message or "yielded no channels" in message:
                report.skipped.append((str(path), "no EEG channel"))
                warnings.warn(f"skipping {path}: {message}")
                continue
            if on_error == "raise":
                raise ValueError(f"cannot prepare {path}: {message} (use on_error='skip' to skip such files)") from error
            report.skipped.append((str(path), message))
            warnings.warn(f"skipping unreadable file {path}: {message}")
            continue
        rows_by_file.append((path, subject, dict(features=features, source_rate=source_rate)))

    if not rows_by_file:
        raise ValueError("no recording could be prepared: " + "; ".join(f"{p}: {r}" for p, r in report.skipped))
    keys = [subject if split_by == "subject" else str(path) for path, subject, _ in rows_by_file]
    held_out = split_subjects(keys, validation_fraction, seed)

    splits: dict[str, dict[str, list]] = {"train": defaultdict(list), "validation": defaultdict(list)}
    for (path, subject, item), key in zip(rows_by_file, keys):
        split = splits["validation" if key in held_out else "train"]
        values, mask = item["features"]["input_values"], item["features"]["padding_mask"]
        window_samples = values.shape[-1]
        for index in range(values.shape[0]):
            split["input_values"].append(values[index])
            split["valid_samples"].append(int(mask[index, 0].sum()))
            split["channel_names"].append(list(item["features"]["channel_names"]))
            split["recording_id"].append(str(path))
            split["subject_id"].append(subject)
            split["source_sampling_rate"].append(float(item["source_rate"]))
            split["start_seconds"].append(index * window_samples / extractor.sampling_rate)

    features = datasets.Features({
        "input_values": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
        "valid_samples": datasets.Value("int32"),
        "channel_names": datasets.Sequence(datasets.Value("string")),
        "recording_id": datasets.Value("string"),
        "subject_id": datasets.Value("string"),
        "source_sampling_rate": datasets.Value("float32"),
        "start_seconds": datasets.Value("float32"),
    })
    dataset = datasets.DatasetDict({
        name: datasets.Dataset.from_dict({k: v for k, v in columns.items()} or {k: [] for k in features}, features=features)
        for name, columns in splits.items()
    })
    output_dir.mkdir(parents=True, exist_ok=True)
    # an empty split (validation_fraction=0) needs one (empty) shard, or `load_from_disk` cannot read it back
    dataset.save_to_disk(str(output_dir), num_shards={name: 1 for name, split in dataset.items() if len(split) == 0})
    report.windows = {name: len(split) for name, split in dataset.items()}
    report.subjects = {name: sorted(set(split["subject_id"])) for name, split in dataset.items()}
    manifest_path.write_text(json.dumps(dict(fingerprint=fingerprint, windows=report.windows, subjects=report.subjects,
                                             skipped=report.skipped, truncated=report.truncated,
                                             files=[str(p) for p in files]), indent=1))
    return report


def load_split(path: str | Path, split: str | None, marker: str, made_by: str, numpy_columns: list[str]):
    """A `DatasetDict` saved by this project (or one split of it), its signal columns formatted as numpy.

    `marker` is the manifest file that the writing command (`made_by`) leaves in the folder.
    """
    import datasets

    path = Path(path)
    if not (path / marker).is_file():
        raise ValueError(f"{path} is not a dataset written by `{made_by}` (no {marker}): run it first")
    dataset = datasets.load_from_disk(str(path))
    if split is not None:
        if split not in dataset:
            raise ValueError(f"{path} has no split {split!r} (splits: {list(dataset)})")
        dataset = dataset[split]
    return dataset.with_format("numpy", columns=numpy_columns, output_all_columns=True)


def load_prepared(path: str | Path, split: str | None = None):
    """The prepared `DatasetDict` (or one split of it), formatted as numpy."""
    return load_split(path, split, "prepare_manifest.json", "neurorvq prepare", ["input_values", "valid_samples"])


class ShapeBucketBatchSampler(torch.utils.data.Sampler):
    """Batches of window indices with equal (channels, samples), shuffled per epoch (seeded, reproducible).

    Windows of one batch must share a shape; different recordings have different montages and window
    lengths, so batches are drawn within shape buckets.
    """

    def __init__(self, shapes: list[tuple[int, int]], batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        self.buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, shape in enumerate(shapes):
            self.buckets[tuple(shape)].append(index)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        batches = []
        for shape in sorted(self.buckets):
            indices = list(self.buckets[shape])
            if self.shuffle:
                rng.shuffle(indices)
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def window_shapes(dataset) -> list[tuple[int, int]]:
    """(channels, samples) of every window, read from the Arrow offsets without loading the signals."""
    import pyarrow.compute as pc

    column = dataset.with_format(None).data.column("input_values")
    channels = pc.list_value_length(column).to_pylist()
    samples = pc.list_value_length(pc.list_element(column, 0)).to_pylist()
    return list(zip(channels, samples))


def collate_windows(rows: list[dict]) -> dict:
    """Rows of equal shape -> `input_values` [B, C, T] float32 µV, `padding_mask` [B, C, T], `channel_names`."""
    values = torch.as_tensor(np.stack([np.asarray(r["input_values"], dtype=np.float32) for r in rows]))
    mask = torch.zeros(values.shape, dtype=torch.long)
    for i, row in enumerate(rows):
        mask[i, :, : int(row["valid_samples"])] = 1
    return {"input_values": values, "padding_mask": mask, "channel_names": [list(r["channel_names"]) for r in rows]}
