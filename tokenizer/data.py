"""EEG recordings -> windowed `datasets` on disk (Arrow), split by subject; batching windows of equal shape.

One row per window: `input_values` [C][T] float32 microvolts at 200 Hz (T = A * 200), `valid_samples` (the
first `valid_samples` samples of every channel are real, the rest is zero padding), `channel_names`,
`recording_id`, `subject_id`, `source_sampling_rate`, `start_seconds`, `label` (the condition of the stretch the
window lies in, `""` = unlabelled; see `prepare_dataset`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import random
import re
import shutil
import tempfile
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .channels import BipolarChannelWarning
from .checks import SignalQualityWarning, UnitWarning
from .configuration_neurorvq import SAMPLING_RATE
from .feature_extraction_neurorvq import (
    NeuroRVQFeatureExtractor,
    NoEEGSignalError,
    TruncatedRecordingWarning,
    rate_from_file_name,
    read_recording,
)

# Extensions that hold a recording MNE can open (companions like .fdt or .vmrk are opened through their header).
RECORDING_SUFFIXES = {".edf", ".bdf", ".gdf", ".set", ".fif", ".vhdr", ".cnt", ".mff", ".nxe", ".eeg", ".txt"}
_SUBJECT_PATTERNS = (re.compile(r"(Subject\d+)"), re.compile(r"\b(S\d{3})(?:R\d+)?\b"), re.compile(r"(sub-[A-Za-z0-9]+)"))
DATA_FORMAT_VERSION = 2  # 2: `label` column, windows cut per labelled segment
# The corpus policy used when none is given: the project's shared corpus (shared/data/eeg). A data file shipped in
# the package (also at configs/corpus/shared-eeg.json); see `CorpusPolicy`.
DEFAULT_CORPUS_POLICY = Path(__file__).resolve().parent / "corpus" / "shared-eeg.json"
LABEL_PRESETS = ("builtin", "none")  # `labels=`: the corpus policy's labels, or none
MIN_SEGMENT_SECONDS = 1.0  # labelled stretches shorter than this give no window
MAX_SHARD_BYTES = 256 * 2**20  # signal bytes per Arrow file of a prepared split: `tokenize` maps one file at a time, so this bounds its resident memory


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


def _match(pattern: str, path: Path) -> bool:
    """fnmatch, case-insensitive, on the file name; a pattern holding a `/` on the path's end (`eegmat/*_1.edf`)."""
    pattern = pattern.lower()
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.name.lower(), pattern)
    target = path.as_posix().lower()
    return fnmatch.fnmatchcase(target, pattern) or fnmatch.fnmatchcase(target, "*/" + pattern.lstrip("/"))


def _check_label(label: object, where: str) -> str:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{where}: a label must be a non-empty string, got {label!r}")
    return label


def parse_label_mapping(text: str, option: str = "label_map") -> dict:
    """`NAME=LABEL[,NAME=LABEL...]` or the path of a JSON file holding an object -> dict.

    Raises `ValueError` naming `option` for anything else (a missing `=`, an empty name or label, a name given twice
    with two labels, unreadable JSON).
    """
    if not isinstance(text, str):
        raise ValueError(f"{option} must be a mapping or a string, got {type(text).__name__}")
    path = Path(text)
    if text.strip().lower().endswith(".json") or (path.is_file() and "=" not in text):
        if not path.is_file():
            raise ValueError(f"{option}: JSON file {text} not found")
        try:
            mapping = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{option}: cannot read JSON file {text}: {error}") from None
        if not isinstance(mapping, dict):
            raise ValueError(f"{option}: JSON file {text} must hold an object (name -> label)")
        return mapping
    mapping: dict[str, str] = {}
    for item in text.split(","):
        name, equals, label = item.partition("=")
        name, label = name.strip(), label.strip()
        if not equals or not name or not label:
            raise ValueError(f"{option}: {item.strip()!r} is not NAME=LABEL; expected NAME=LABEL[,NAME=LABEL...] "
                             "or the path of a .json file")
        if mapping.get(name, label) != label:
            raise ValueError(f"{option}: {name!r} is given two labels ({mapping[name]!r} and {label!r})")
        mapping[name] = label
    return mapping


@dataclass
class LabelRules:
    """Which label each stretch of a recording gets.

    `annotation_rules`: `(file name pattern, {annotation description: label})`; `file_rules`: `(file name pattern,
    label)`. A sample's label is that of the last-starting mapped annotation (duration > 0) covering it, else the
    label of the first file pattern matching the recording, else `""`.
    """

    annotation_rules: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    file_rules: list[tuple[str, str]] = field(default_factory=list)
    user: bool = False  # given by the user (unused entries are reported)

    def to_dict(self) -> dict:
        return {"label_map": [[p, dict(sorted(m.items()))] for p, m in self.annotation_rules],
                "file_labels": [list(r) for r in self.file_rules]}

    def file_label(self, path: Path) -> str:
        return next((label for pattern, label in self.file_rules if _match(pattern, path)), "")

    def annotation_map(self, path: Path) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for pattern, rules in self.annotation_rules:
            if _match(pattern, path):
                mapping.update(rules)
        return mapping

    def segments(self, path: Path, raw, duration: float, seen: set | None = None) -> list[tuple[float, float, str]]:
        """`(start, stop, label)` in seconds from the first sample: consecutive stretches of one label that cover
        the recording (unlabelled stretches included, label `""`). `seen` collects the mapped descriptions met."""
        base, mapping = self.file_label(path), self.annotation_map(path)
        intervals = []
        if mapping and raw is not None and len(raw.annotations):
            annotations = raw.annotations
            onsets = np.asarray(annotations.onset, dtype=float) - raw.first_time  # onsets count from first_samp 0
            for onset, length, description in zip(onsets, annotations.duration, annotations.description):
                label = mapping.get(str(description))
                if label is None:
                    continue
                if seen is not None:
                    seen.add(str(description))
                start, stop = max(0.0, float(onset)), min(duration, float(onset + length))
                if stop > start:
                    intervals.append((start, stop, label))
        intervals.sort(key=lambda interval: interval[0])  # stable: among equal onsets, the later annotation wins
        edges = sorted({0.0, duration, *(edge for start, stop, _ in intervals for edge in (start, stop))})
        segments: list[tuple[float, float, str]] = []
        for start, stop in zip(edges, edges[1:]):
            label = base
            for first, last, name in intervals:
                if first <= start and stop <= last:
                    label = name
            if segments and segments[-1][2] == label:
                segments[-1] = (segments[-1][0], stop, label)
            else:
                segments.append((start, stop, label))
        return segments


@dataclass
class CorpusPolicy:
    """What a corpus decides for `prepare_dataset`, kept as data (a JSON file) rather than code.

    `reserved_subjects`: subject ids (`dataset/subject`, see `subject_id`) of a hold-out set, never prepared;
    fnmatch patterns, case-insensitive, each matching the end of an id (`"eegmmidb/S088"`, `"eegmat/Subject3?"`).
    `file_labels` and `label_map`: the corpus' own labels (`labels="builtin"`), in the form of the user mappings of
    `prepare_dataset` (file name pattern -> label; file name pattern -> {annotation description -> label}).
    `source`: the file it was read from.
    """

    reserved_subjects: list[str] = field(default_factory=list)
    file_labels: dict[str, str] = field(default_factory=dict)
    label_map: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = ""

    def is_reserved(self, subject: str) -> bool:
        subject = subject.lower()
        return any(fnmatch.fnmatchcase(subject, "*" + pattern.lower()) for pattern in self.reserved_subjects)


def load_corpus_policy(policy: str | Path | CorpusPolicy | None = None) -> CorpusPolicy:
    """A [`CorpusPolicy`] from a JSON file (None: `DEFAULT_CORPUS_POLICY`, the shared corpus's) holding
    `reserved_subjects` (a list), `file_labels` and `label_map` (objects), and optionally `description` and
    `notes`. Raises `ValueError` naming the file for anything else."""
    if isinstance(policy, CorpusPolicy):
        return policy
    path = Path(DEFAULT_CORPUS_POLICY if policy is None else policy)
    if not path.is_file():
        raise FileNotFoundError(f"corpus policy {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"corpus policy {path} is not valid JSON: {error}") from error
    known = {"description", "notes", "reserved_subjects", "file_labels", "label_map"}
    if not isinstance(data, dict) or set(data) - known:
        raise ValueError(f"corpus policy {path} must be a JSON object with keys among {sorted(known)}"
                         + (f", got {sorted(set(data) - known)}" if isinstance(data, dict) else ""))
    reserved = data.get("reserved_subjects", [])
    if not isinstance(reserved, list) or any(not isinstance(p, str) or not p.strip() for p in reserved):
        raise ValueError(f"corpus policy {path}: reserved_subjects must be a list of subject ids (dataset/subject)")
    result = CorpusPolicy(list(reserved), data.get("file_labels", {}), data.get("label_map", {}), str(path))
    try:  # the labels are checked as the user's mappings would be
        resolve_labels("builtin", policy=result)
    except ValueError as error:
        raise ValueError(f"corpus policy {path}: {error}") from error
    return result


def resolve_labels(labels: str = "builtin", label_map: dict | str | None = None,
                   file_labels: dict | str | None = None, policy: CorpusPolicy | None = None) -> LabelRules:
    """The label rules of `prepare_dataset` (see there); raises `ValueError` for a malformed mapping.
    `labels="builtin"` takes the corpus policy's labels (`policy`, default: the shared corpus's)."""
    if labels not in LABEL_PRESETS:
        raise ValueError(f"labels must be one of {sorted(LABEL_PRESETS)}, got {labels!r}")
    if labels == "none" and (label_map is not None or file_labels is not None):
        raise ValueError("labels='none' turns labels off: do not pass label_map or file_labels with it")
    user = label_map is not None or file_labels is not None
    if not user and labels == "builtin":
        policy = load_corpus_policy(policy)
        label_map, file_labels = policy.label_map, policy.file_labels
    if isinstance(label_map, str):
        label_map = parse_label_mapping(label_map, "label_map")
    if isinstance(file_labels, str):
        file_labels = parse_label_mapping(file_labels, "file_labels")
    rules = LabelRules(user=user)
    for option, mapping in (("label_map", label_map), ("file_labels", file_labels)):
        if mapping is not None and not isinstance(mapping, dict):
            raise ValueError(f"{option} must be a dict (or NAME=LABEL,... text, or a .json file), "
                             f"got {type(mapping).__name__}")
        if any(not isinstance(key, str) or not key for key in mapping or {}):
            raise ValueError(f"{option}: every key must be a non-empty string, got {list(mapping)}")
    for pattern, label in (file_labels or {}).items():
        rules.file_rules.append((pattern, _check_label(label, f"file_labels[{pattern!r}]")))
    values = list((label_map or {}).values())
    if all(isinstance(v, dict) for v in values) and values:  # file pattern -> {description -> label}
        for pattern, mapping in label_map.items():
            if any(not isinstance(key, str) or not key for key in mapping):
                raise ValueError(f"label_map[{pattern!r}]: every annotation description must be a non-empty string")
            rules.annotation_rules.append(
                (pattern, {d: _check_label(v, f"label_map[{pattern!r}][{d!r}]") for d, v in mapping.items()}))
    elif all(isinstance(v, str) for v in values):  # description -> label, for every file
        if values:
            rules.annotation_rules.append(("*", {d: _check_label(v, f"label_map[{d!r}]") for d, v in label_map.items()}))
    elif any(isinstance(v, dict) for v in values):
        raise ValueError("label_map must map annotation descriptions to labels ({'T0': 'rest'}) or file name patterns "
                         "to such mappings ({'*R03.edf': {'T1': 'left'}}), not a mix of both")
    else:
        for description, label in label_map.items():
            _check_label(label, f"label_map[{description!r}]")
    return rules


@dataclass
class PrepareReport:
    """What `prepare_dataset` did: counts per split, and every skipped file with the reason."""

    output_dir: str
    reused_cache: bool
    windows: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    truncated: list[tuple[str, str]] = field(default_factory=list)  # files that end before their header says
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> label -> windows ("" = unlabelled)


PREPARE_MANIFEST = "prepare_manifest.json"  # written last by `prepare_dataset`: marks a finished dataset folder
SPLITS = ("train", "validation")


@dataclass
class _PrepareOptions:
    """The options of one `prepare_dataset` call, resolved: corpus policy and labels read, extractor chosen."""

    extractor: NeuroRVQFeatureExtractor
    rules: LabelRules
    policy: CorpusPolicy
    validation_fraction: float
    split_by: str
    seed: int
    on_error: str
    on_unknown_channel: str
    text_channel_names: list[str] | None
    progress: bool

    def settings(self) -> dict:
        """What the prepared windows depend on besides the files' bytes: a change rebuilds a cached dataset."""
        return dict(version=DATA_FORMAT_VERSION, extractor=self.extractor.to_dict(),
                    validation_fraction=self.validation_fraction, split_by=self.split_by, seed=self.seed,
                    on_error=self.on_error, on_unknown_channel=self.on_unknown_channel,
                    text_channel_names=self.text_channel_names, labels=self.rules.to_dict(),
                    reserved_subjects=sorted(self.policy.reserved_subjects))  # a longer hold-out list rebuilds


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
    labels: str = "builtin",
    label_map: dict | str | None = None,
    file_labels: dict | str | None = None,
    corpus_policy: str | Path | CorpusPolicy | None = None,
) -> PrepareReport:
    """Preprocess recordings into a `DatasetDict` (train / validation) saved at `output_dir`.

    Args:
        inputs: files MNE reads (and `.txt` microvolt columns) or folders of them.
        feature_extractor: preprocessing and windowing (default: the released settings).
        validation_fraction: share of subjects (or recordings) held out for validation.
        split_by: `"subject"` or `"recording"`; never by window. The split is decided from the file names
            (subject ids) before any file is read.
        on_error: `"raise"` (a clear error naming the file) or `"skip"` (warn, count, go on) for unreadable
            or corrupt files. Files with no EEG signal (`NoEEGSignalError`: an annotation-only EDF such as a
            hypnogram, or only non-EEG channels) are always skipped, with a warning naming the file, and reported,
            as are `.txt` files when `text_channel_names` is not given.
        on_unknown_channel: `"drop"` (warn) or `"raise"` for channels outside the vocabulary.
        text_channel_names: labels of the columns of `.txt` recordings.
        labels: `"builtin"` (default): when neither `label_map` nor `file_labels` is given, the corpus' own labels
            from `corpus_policy` (the shared corpus's: EEGMAT `SubjectNN_1.edf` = `rest`, `_2.edf` =
            `arithmetic`; EEGMMIDB `R01` = `eyes_open`, `R02` = `eyes_closed`, and in runs 3-14 the annotations T0 =
            `rest`, T1/T2 = `motor_execution` (runs 3, 5, 7, 9, 11, 13) or `motor_imagery` (4, 6, 8, 10, 12, 14);
            everything else unlabelled). `"none"`: every window unlabelled.
        label_map: the user's labels from the recordings' MNE annotations, replacing the built-in ones:
            `{description: label}` for every file (`{"T0": "rest", "T1": "task"}`), or `{file name pattern:
            {description: label}}`; also as text `"T0=rest,T1=task"` or the path of a `.json` file. Annotations
            not in the map, and annotations of zero duration, label nothing.
        file_labels: the user's labels of whole files, replacing the built-in ones: `{file name pattern: label}`
            (fnmatch, case-insensitive, on the file name; on the end of the path when the pattern holds a `/`, as in
            `"eegmat/*_1.edf"`; the first matching pattern wins), e.g. `{"*_1.edf": "rest"}`; also as text or a `.json` path.
        corpus_policy: a [`CorpusPolicy`] or the path of its JSON file (default: `DEFAULT_CORPUS_POLICY`, the shared
            corpus's, also at `configs/corpus/shared-eeg.json`): the subjects reserved for a hold-out set, which are
            skipped (reported in `skipped`) before any file is read, and the labels of `labels="builtin"`.

    Labels: each window gets a string `label` (`""` = unlabelled). A sample's label is that of the mapped annotation
    covering it (the later-starting one where two overlap), else its file's label, else `""`. Each recording is
    preprocessed whole, then cut into segments of one label (consecutive stretches, unlabelled ones included) and
    each segment is windowed on its own, so no window spans a label change; when a recording has more than one
    segment, segments shorter than 1 s give no window. `start_seconds` is each window's start in its recording.

    Windows are written to Arrow files as they are made (memory does not grow with the corpus). Re-running with the
    same inputs (same bytes) and settings (labels included) reuses `output_dir`; any change rebuilds it.
    """
    if split_by not in ("subject", "recording"):
        raise ValueError(f"split_by must be 'subject' or 'recording', got {split_by!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    policy = load_corpus_policy(corpus_policy)
    rules = resolve_labels(labels, label_map, file_labels, policy)
    options = _PrepareOptions(feature_extractor or NeuroRVQFeatureExtractor(), rules, policy, validation_fraction,
                              split_by, seed, on_error, on_unknown_channel, text_channel_names, progress)
    output_dir = Path(output_dir)
    files = find_recordings(inputs)
    if not files:
        raise ValueError("no recording found in the inputs")
    fingerprint = _fingerprint(files, options.settings())
    check_dataset_output(output_dir, PREPARE_MANIFEST, files)
    cached = _cached_report(output_dir, fingerprint)
    if cached is not None:
        return cached

    report = PrepareReport(str(output_dir), False)
    recordings = _assign_splits(_select_recordings(files, options, report), options)
    seen = _write_splits(output_dir, recordings, options, fingerprint, report)
    if rules.user:
        _warn_unused_labels(rules, seen, [path for path, _, _ in recordings])
    (output_dir / PREPARE_MANIFEST).write_text(json.dumps(dict(
        fingerprint=fingerprint, windows=report.windows, subjects=report.subjects, skipped=report.skipped,
        truncated=report.truncated, labels=report.labels, files=[str(p) for p in files]), indent=1))
    return report


def _cached_report(output_dir: Path, fingerprint: str) -> PrepareReport | None:
    """The report of the dataset already in `output_dir` when it was prepared with the same `fingerprint`."""
    manifest_path = output_dir / PREPARE_MANIFEST
    if not (manifest_path.is_file() and (output_dir / "dataset_dict.json").is_file()):
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("fingerprint") != fingerprint:
        return None
    return PrepareReport(str(output_dir), True, manifest["windows"], manifest["subjects"],
                         [tuple(s) for s in manifest["skipped"]],
                         [tuple(t) for t in manifest.get("truncated", [])], manifest.get("labels", {}))


def _select_recordings(files: list[Path], options: _PrepareOptions, report: PrepareReport) -> list[tuple[Path, str]]:
    """`(path, subject id)` of the files to prepare, from the file names alone (no file is read): the corpus
    policy's reserved hold-out subjects and `.txt` files without channel labels are skipped (in `report`)."""
    candidates: list[tuple[Path, str]] = []
    for path in files:
        subject = subject_id(path)
        if options.policy.is_reserved(subject):
            report.skipped.append((str(path), "reserved hold-out subject"))
            warnings.warn(f"skipping {path}: subject {subject} is reserved for the hold-out set")
        elif path.suffix.lower() == ".txt" and not options.text_channel_names:
            report.skipped.append((str(path), "text file without channel labels (pass text_channel_names)"))
            warnings.warn(f"skipping {path}: its channel labels are unknown; pass text_channel_names")
        else:
            candidates.append((path, subject))
    if not candidates:
        raise _nothing_prepared(report)
    return candidates


def _assign_splits(candidates: list[tuple[Path, str]], options: _PrepareOptions) -> list[tuple[Path, str, str]]:
    """`(path, subject id, split)`: each candidate in `"train"` or `"validation"`, held out by subject or by
    recording (`split_by`), never by window."""
    keys = [subject if options.split_by == "subject" else str(path) for path, subject in candidates]
    held_out = split_subjects(keys, options.validation_fraction, options.seed)
    return [(path, subject, "validation" if key in held_out else "train")
            for (path, subject), key in zip(candidates, keys)]


def _window_features():
    """The `datasets.Features` of a prepared window (one row), see the module docstring."""
    import datasets

    return datasets.Features({
        "input_values": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
        "valid_samples": datasets.Value("int32"),
        "channel_names": datasets.Sequence(datasets.Value("string")),
        "recording_id": datasets.Value("string"),
        "subject_id": datasets.Value("string"),
        "source_sampling_rate": datasets.Value("float32"),
        "start_seconds": datasets.Value("float32"),
        "label": datasets.Value("string"),
    })


def _write_splits(output_dir: Path, recordings: list[tuple[Path, str, str]], options: _PrepareOptions,
                  fingerprint: str, report: PrepareReport) -> set[str]:
    """Window every `(path, subject id, split)` into Arrow shards and move them into `output_dir` as a `DatasetDict`.

    Shards are written to a scratch folder beside the output as the windows are made (nothing accumulates in
    memory), then moved (not copied) into place; the scratch folder is always removed, and a failed first run
    leaves no empty output folder behind. Fills `report` (windows, subjects, labels, skipped files); returns the
    annotation descriptions met that a label rule maps.
    """
    features = _window_features()
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.prepare-", dir=output_dir.resolve().parent))
    try:
        writers = {name: _ShardWriter(scratch, name, features) for name in SPLITS}
        seen = _write_windows(recordings, writers, options, report)
        shards = {name: writer.finish() for name, writer in writers.items()}
        report.windows = {name: writers[name].rows for name in SPLITS}
        if not sum(report.windows.values()):
            raise _nothing_prepared(report)
        if not report.windows["train"]:
            raise ValueError("no training window: every recording of the training subjects was skipped ("
                             + "; ".join(f"{p}: {r}" for p, r in report.skipped) + ")")
        # a rebuild: the old manifest goes first, so an interrupted one is never taken for a finished one
        (output_dir / PREPARE_MANIFEST).unlink(missing_ok=True)
        save_shards(output_dir, shards, features, fingerprint)
    except BaseException:
        if created and not any(output_dir.iterdir()):  # a failed first run leaves no empty folder behind
            output_dir.rmdir()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return seen


def _write_windows(recordings: list[tuple[Path, str, str]], writers: dict[str, _ShardWriter],
                   options: _PrepareOptions, report: PrepareReport) -> set[str]:
    """Read, preprocess and window each recording, one at a time, into its split's writer; sets `report.subjects`
    and `report.labels` (windows per label). Returns the mapped annotation descriptions met."""
    from tqdm.auto import tqdm

    subjects: dict[str, set[str]] = {name: set() for name in SPLITS}
    label_counts: dict[str, dict[str, int]] = {name: defaultdict(int) for name in SPLITS}
    seen: set[str] = set()
    for path, subject, split in tqdm(recordings, desc="preparing recordings", disable=not options.progress):
        item = _prepare_file(path, options, report, seen)
        if item is None:
            continue
        values, count = item["input_values"], len(item["input_values"])
        writers[split].write({
            "input_values": list(values),
            "valid_samples": item["padding_mask"][:, 0].sum(axis=-1).astype(np.int32),
            "channel_names": [list(item["channel_names"])] * count,
            "recording_id": [str(path)] * count,
            "subject_id": [subject] * count,
            "source_sampling_rate": [float(item["source_rate"])] * count,
            "start_seconds": item["start_seconds"].astype(np.float32),
            "label": item["labels"],
        }, values.nbytes)
        subjects[split].add(subject)
        for label in item["labels"]:
            label_counts[split][label] += 1
        del item, values  # one recording's windows in memory at a time
    report.subjects = {name: sorted(subjects[name]) for name in SPLITS}
    report.labels = {name: dict(sorted(label_counts[name].items())) for name in SPLITS}
    return seen


def _warn_unused_labels(rules: LabelRules, seen: set[str], paths: list[Path]) -> None:
    """The user's label rules that labelled nothing: annotation descriptions never met, file patterns matching no
    recording (a typo, most likely)."""
    unused = sorted({d for _, mapping in rules.annotation_rules for d in mapping} - seen)
    if unused:
        warnings.warn(f"label_map: no prepared recording has annotations {unused}: those labels were not used")
    unmatched = [pattern for pattern, _ in rules.file_rules if not any(_match(pattern, p) for p in paths)]
    if unmatched:
        warnings.warn(f"file_labels: the pattern(s) {unmatched} match no recording")


def _nothing_prepared(report: PrepareReport) -> ValueError:
    return ValueError("no recording could be prepared: " + "; ".join(f"{p}: {r}" for p, r in report.skipped))


class _ShardWriter:
    """Rows of one split written to Arrow files as they come (`datasets` ArrowWriter): a new shard every
    `max_bytes` of signal, as `save_to_disk` would cut them."""

    def __init__(self, folder: Path, name: str, features, max_bytes: int | None = None):
        self.folder, self.name, self.features = folder, name, features
        self.max_bytes = MAX_SHARD_BYTES if max_bytes is None else max_bytes
        self.paths: list[Path] = []
        self.writer, self.bytes, self.rows = None, 0, 0

    def _open(self) -> None:
        from datasets.arrow_writer import ArrowWriter

        if self.writer is not None:
            self.writer.finalize()
        self.paths.append(self.folder / f"{self.name}-{len(self.paths):05d}.arrow")
        self.writer, self.bytes = ArrowWriter(features=self.features, path=str(self.paths[-1])), 0

    def write(self, batch: dict, nbytes: int) -> None:
        if self.writer is None or self.bytes >= self.max_bytes:
            self._open()
        self.writer.write_batch(batch)
        self.bytes += nbytes
        self.rows += len(batch["label"])

    def finish(self) -> list[Path]:
        if self.writer is None:  # an empty split still gets one (empty) shard: `load_from_disk` needs it
            self._open()
        self.writer.finalize()
        self.writer = None
        return self.paths


def save_shards(output_dir: Path, shards: dict[str, list[Path]], features, fingerprint: str) -> None:
    """Move finished Arrow shards (split -> files) into `output_dir` as a `DatasetDict.save_to_disk` folder.

    The metadata (`dataset_dict.json`, each split's `state.json` and `dataset_info.json`) is written by `datasets`
    itself (saving empty splits of the same features); only the data files are swapped in, so nothing is copied.
    """
    import datasets

    for name in (*shards, "dataset_dict.json"):  # the previous dataset of this folder (checked to be one)
        old = output_dir / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.is_file():
            old.unlink()
    empty = datasets.DatasetDict({name: datasets.Dataset.from_dict({k: [] for k in features}, features=features)
                                  for name in shards})
    empty.save_to_disk(str(output_dir), num_shards={name: 1 for name in shards})
    for name, paths in shards.items():
        folder = output_dir / name
        for old in folder.glob("data-*.arrow"):
            old.unlink()
        files = [f"data-{i:05d}-of-{len(paths):05d}.arrow" for i in range(len(paths))]
        for path, file in zip(paths, files):
            Path(path).replace(folder / file)
        state = json.loads((folder / "state.json").read_text())
        state["_data_files"] = [{"filename": file} for file in files]
        state["_fingerprint"] = hashlib.sha256(f"{fingerprint}:{name}".encode()).hexdigest()[:16]
        (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))


def _prepare_file(path: Path, options: _PrepareOptions, report: PrepareReport, seen: set[str]) -> dict | None:
    """One recording -> its windows (`input_values`, `padding_mask`, `channel_names`, `start_seconds`, `labels`,
    `source_rate`), or None when it is skipped (recorded in `report`). `seen` collects the mapped annotation
    descriptions met."""
    extractor, rules, text_channel_names = options.extractor, options.rules, options.text_channel_names
    is_text = path.suffix.lower() == ".txt"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # read each file once: the extractor takes the Raw, and the Raw gives the source rate and annotations
            recording = path if is_text else read_recording(path)
            source_rate = (rate_from_file_name(path) or float("nan")) if is_text else float(recording.info["sfreq"])
            duration = math.inf if is_text else recording.n_times / source_rate
            segments = rules.segments(path, None if is_text else recording, duration, seen)
            # one label for the whole recording: one segment, windowed as before (nothing dropped)
            features = extractor(recording, channel_names=text_channel_names if is_text else None,
                                 on_unknown_channel=options.on_unknown_channel,
                                 segments=[(start, stop) for start, stop, _ in segments],
                                 min_segment_seconds=MIN_SEGMENT_SECONDS if len(segments) > 1 else 0.0)
            del recording
        for warning in caught:
            if issubclass(warning.category, TruncatedRecordingWarning):
                report.truncated.append((str(path), str(warning.message)))
            if issubclass(warning.category, (TruncatedRecordingWarning, SignalQualityWarning, UnitWarning,
                                             BipolarChannelWarning)) or "unknown" in str(warning.message).lower():
                message = str(warning.message)
                warnings.warn(message if str(path) in message else f"{path}: {message}", warning.category)
    except NoEEGSignalError as error:  # nothing to prepare in it (a hypnogram, say): skipped whatever on_error
        report.skipped.append((str(path), "no EEG channel"))
        warnings.warn(f"skipping {path}: {error}")
        return None
    except ValueError as error:
        message = str(error)
        if options.on_error == "raise":
            raise ValueError(f"cannot prepare {path}: {message} (use on_error='skip' to skip such files)") from error
        report.skipped.append((str(path), message))
        warnings.warn(f"skipping unreadable file {path}: {message}")
        return None
    if len(features["input_values"]) == 0:
        reason = f"no labelled stretch of at least {MIN_SEGMENT_SECONDS:g} s"
        report.skipped.append((str(path), reason))
        warnings.warn(f"skipping {path}: {reason}")
        return None
    return dict(input_values=features["input_values"], padding_mask=features["padding_mask"],
                channel_names=features["channel_names"], start_seconds=features["start_seconds"],
                labels=[segments[i][2] for i in features["segment_index"]], source_rate=source_rate)


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
    return load_split(path, split, PREPARE_MANIFEST, "neurorvq prepare", ["input_values", "valid_samples"])


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
    """(channels, samples) of every window, read from the Arrow offsets only: no page of the signals is touched
    (a memory-mapped dataset stays on disk)."""
    import pyarrow.compute as pc

    shapes: list[tuple[int, int]] = []
    for chunk in dataset.with_format(None).data.column("input_values").chunks:
        channels = pc.list_value_length(chunk).to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = pc.list_value_length(chunk.flatten()).to_numpy(zero_copy_only=False)  # every channel of every window
        first = np.cumsum(channels) - channels  # index of each window's first channel
        shapes += zip(channels.tolist(), lengths[first].tolist())
    return shapes


def collate_windows(rows: list[dict]) -> dict:
    """Rows of equal shape -> `input_values` [B, C, T] float32 µV, `padding_mask` [B, C, T], `channel_names`."""
    values = torch.as_tensor(np.stack([np.asarray(r["input_values"], dtype=np.float32) for r in rows]))
    mask = torch.zeros(values.shape, dtype=torch.long)
    for i, row in enumerate(rows):
        mask[i, :, : int(row["valid_samples"])] = 1
    return {"input_values": values, "padding_mask": mask, "channel_names": [list(r["channel_names"]) for r in rows]}


def synthetic_eeg(batch: int, channels: int, seconds: int, seed: int = 0) -> torch.Tensor:
    """A seeded random walk plus a 10-Hz rhythm of random phase, in microvolts, [B, C, seconds * 200] at 200 Hz
    (`SAMPLING_RATE`): an EEG-shaped signal for smoke tests and benchmarks (not a model of EEG)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(seconds * SAMPLING_RATE) / SAMPLING_RATE
    noise = torch.randn(batch, channels, seconds * SAMPLING_RATE, generator=generator).cumsum(-1) * 0.5
    alpha = 20 * torch.sin(2 * math.pi * 10 * t + torch.rand(batch, channels, 1, generator=generator) * 6.28)
    return noise - noise.mean(-1, keepdim=True) + alpha
