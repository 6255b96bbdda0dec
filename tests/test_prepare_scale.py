"""`prepare_dataset` at scale: windows are written as they are made (memory flat in the number of recordings),
split into Arrow shards moved into place, with no scratch file left behind, and a failed run leaves the previous
dataset intact. The 1x/2x/4x corpus measurement is `benchmarks/prepare_memory.py`."""

from __future__ import annotations

import json
import shutil
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from neurorvq.tokenizer import data
from neurorvq.tokenizer.data import load_prepared, prepare_dataset, window_shapes

SHORT = [f"eegmat/Subject{i:02d}_2.edf" for i in range(8)]  # 62 s, 19 channels each


def _peak_mb(files: list[Path], output: Path) -> float:
    tracemalloc.start()
    try:
        prepare_dataset(files, output, validation_fraction=0.0, progress=False)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_prepare_memory_does_not_grow_with_the_number_of_recordings(eeg_dir, tmp_path):
    files = [eeg_dir / f for f in SHORT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _peak_mb(files[:1], tmp_path / "warm-up")  # lazy imports and caches of the first call
        two, eight = _peak_mb(files[:2], tmp_path / "two"), _peak_mb(files[:8], tmp_path / "eight")
    # collecting every window in memory grew the peak by ~3 MB per such recording (17 MB from 2 to 8 files)
    assert eight - two < 2.0, f"peak traced memory {two:.1f} MB for 2 recordings, {eight:.1f} MB for 8"


def _scratch(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".prepare-" in p.name]


def _rows(folder: Path) -> list[tuple]:
    rows = [*load_prepared(folder, "train"), *load_prepared(folder, "validation")]
    return [(r["recording_id"], float(r["start_seconds"]), int(r["valid_samples"]), r["label"],
             r["input_values"].tobytes()) for r in rows]


def test_shards_are_moved_into_place_and_read_back_in_order(eeg_dir, tmp_path, monkeypatch):
    files = [eeg_dir / f for f in SHORT[:4]]
    prepare_dataset(files, tmp_path / "one", validation_fraction=0.25, progress=False)
    monkeypatch.setattr(data, "MAX_SHARD_BYTES", 1)  # a new shard for every recording
    report = prepare_dataset(files, tmp_path / "many", validation_fraction=0.25, progress=False)
    shards = sorted(p.name for p in (tmp_path / "many" / "train").glob("data-*.arrow"))
    assert shards == [f"data-{i:05d}-of-00003.arrow" for i in range(3)]
    assert _rows(tmp_path / "many") == _rows(tmp_path / "one")
    train = load_prepared(tmp_path / "many", "train")
    assert report.windows == {"train": len(train), "validation": len(load_prepared(tmp_path / "many", "validation"))}
    assert window_shapes(train) == [tuple(np.asarray(r["input_values"]).shape) for r in train]
    assert {f: train.features[f].dtype for f in ("valid_samples", "start_seconds", "label")} == \
        {"valid_samples": "int32", "start_seconds": "float32", "label": "string"}
    # a rebuild into the same folder (other settings) with one shard leaves no stale shard behind
    monkeypatch.setattr(data, "MAX_SHARD_BYTES", 500 * 2**20)
    prepare_dataset(files, tmp_path / "many", validation_fraction=0.25, progress=False, labels="none")
    state = json.loads((tmp_path / "many" / "train" / "state.json").read_text())
    assert [f["filename"] for f in state["_data_files"]] == ["data-00000-of-00001.arrow"]
    assert sorted(p.name for p in (tmp_path / "many" / "train").glob("*.arrow")) == ["data-00000-of-00001.arrow"]
    assert set(load_prepared(tmp_path / "many", "train")["label"]) == {""}
    assert _scratch(tmp_path) == []


def test_a_failed_prepare_keeps_the_previous_dataset_and_leaves_nothing(eeg_dir, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(eeg_dir / SHORT[0], inputs / "good.edf")
    first = prepare_dataset([inputs], tmp_path / "out", validation_fraction=0.0, progress=False)
    before = _rows(tmp_path / "out")
    (inputs / "broken.edf").write_bytes(b"0       this is not an EDF file" * 10)
    with pytest.raises(ValueError, match="broken.edf"):
        prepare_dataset([inputs], tmp_path / "out", validation_fraction=0.0, progress=False)
    assert _rows(tmp_path / "out") == before and _scratch(tmp_path) == []
    (inputs / "broken.edf").unlink()
    assert prepare_dataset([inputs], tmp_path / "out", validation_fraction=0.0, progress=False).reused_cache
    assert first.windows["train"] == len(before)
    # a first run that fails leaves no (empty) output folder
    (inputs / "broken.edf").write_bytes(b"0       this is not an EDF file" * 10)
    with pytest.raises(ValueError, match="broken.edf"):
        prepare_dataset([inputs], tmp_path / "new", validation_fraction=0.0, progress=False)
    assert not (tmp_path / "new").exists() and _scratch(tmp_path) == []


def test_tokenize_reads_a_sharded_split_shard_by_shard_with_the_same_codes(eeg_dir, tmp_path, monkeypatch):
    import torch

    from neurorvq.lbm.data import load_codes, tokenize_dataset
    from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer

    from .conftest import REPO_ROOT

    files = [eeg_dir / f for f in SHORT[:3]]
    prepare_dataset(files, tmp_path / "one", validation_fraction=0.0, progress=False)
    monkeypatch.setattr(data, "MAX_SHARD_BYTES", 1)  # a new shard for every recording
    prepare_dataset(files, tmp_path / "many", validation_fraction=0.0, progress=False)
    assert len(list((tmp_path / "many" / "train").glob("data-*.arrow"))) == 3
    torch.manual_seed(0)
    tokenizer = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(REPO_ROOT / "configs/tokenizer/tiny-mdct.json")))
    for name in ("one", "many"):
        tokenize_dataset(tmp_path / name, tokenizer, tmp_path / f"codes-{name}")
    one, many = load_codes(tmp_path / "codes-one", "train"), load_codes(tmp_path / "codes-many", "train")
    assert len(one) == len(many) > 0
    for a, b in zip(one, many):
        assert np.array_equal(a["codes"], b["codes"]) and a["label"] == b["label"]
        assert a["recording_id"] == b["recording_id"]
