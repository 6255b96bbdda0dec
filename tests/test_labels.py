"""Labels kept by `prepare_dataset`: the corpus' own (EEGMAT, EEGMMIDB), the user's (annotations, file names),
windows that never span a label change, and labels carried through `tokenize_dataset`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from neurorvq.tokenizer.data import load_prepared, parse_label_mapping, prepare_dataset, resolve_labels

from .conftest import REPO_ROOT

BUILTIN = {  # file -> the label of every window (whole-file labels)
    "eegmat/Subject05_1.edf": "rest",
    "eegmat/Subject05_2.edf": "arithmetic",
    "eegmmidb/S003/S003R01.edf": "eyes_open",
    "eegmmidb/S003/S003R02.edf": "eyes_closed",
}
RUN = "eegmmidb/S003/S003R03.edf"  # motor execution, T0/T1/T2 annotations of ~4.1 s
RATE = 200


def _rows(folder: Path) -> list[dict]:
    return [*load_prepared(folder, "train"), *load_prepared(folder, "validation")]


@pytest.fixture(scope="module")
def builtin(eeg_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("labels") / "prepared"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = prepare_dataset([eeg_dir / f for f in [*BUILTIN, RUN]], output, validation_fraction=0.0,
                                 progress=False)
    assert report.labels["train"]["rest"] > 0 and report.labels["train"]["motor_execution"] > 0
    return output


def test_builtin_whole_file_labels_keep_every_sample(builtin, eeg_dir):
    rows = _rows(builtin)
    for name, label in BUILTIN.items():
        path = str(eeg_dir / name)
        mine = [r for r in rows if r["recording_id"] == path]
        assert mine and {r["label"] for r in mine} == {label}
        raw = mne.io.read_raw(path, preload=False, verbose="error")
        assert sum(int(r["valid_samples"]) for r in mine) == int(raw.n_times / raw.info["sfreq"] * RATE)
        starts = [float(r["start_seconds"]) for r in mine]
        assert starts == sorted(starts) and starts[0] == 0.0


def test_annotated_run_windows_follow_the_annotations_and_never_span_two(builtin, eeg_dir):
    path = str(eeg_dir / RUN)
    raw = mne.io.read_raw(path, preload=False, verbose="error")
    names = {"T0": "rest", "T1": "motor_execution", "T2": "motor_execution"}  # run 3: execution
    spans = [(round(o * RATE), round((o + d) * RATE), names[t])
             for o, d, t in zip(raw.annotations.onset - raw.first_time, raw.annotations.duration,
                                raw.annotations.description)]
    assert {label for *_, label in spans} == {"rest", "motor_execution"}
    rows = [r for r in _rows(builtin) if r["recording_id"] == path]
    covered = {i: 0 for i in range(len(spans))}
    for row in rows:
        first = round(float(row["start_seconds"]) * RATE)
        last = first + int(row["valid_samples"])
        inside = [i for i, (start, stop, _) in enumerate(spans) if start <= first and last <= stop]
        assert len(inside) == 1, f"window {first}-{last} spans a label change"
        assert row["label"] == spans[inside[0]][2]
        covered[inside[0]] += int(row["valid_samples"])
    # every annotation of at least 1 s is kept whole (the run ends exactly where its last annotation does)
    for i, (start, stop, _) in enumerate(spans):
        if stop - start >= RATE:
            assert covered[i] == min(stop, int(raw.n_times / raw.info["sfreq"] * RATE)) - start


def _annotated_fif(folder: Path, name: str = "rec_raw.fif") -> Path:
    rng = np.random.default_rng(0)
    info = mne.create_info(["Cz", "Pz", "Oz"], 250.0, "eeg")
    raw = mne.io.RawArray(rng.standard_normal((3, 250 * 20)) * 20e-6, info, verbose=False)
    raw.set_annotations(mne.Annotations(onset=[2.0, 9.0, 16.0, 17.0, 18.0], duration=[5.0, 6.0, 0.5, 1.0, 0.0],
                                        description=["stim", "rest", "blink", "other", "stim"]))
    path = folder / name
    raw.save(path, verbose=False)
    return path


def _labelled(folder: Path) -> list[tuple[str, float, int]]:
    return [(r["label"], round(float(r["start_seconds"]), 3), int(r["valid_samples"])) for r in _rows(folder)]


def test_user_label_map_and_file_labels_on_a_fif(tmp_path):
    path = _annotated_fif(tmp_path)
    label_map = {"stim": "task", "rest": "rest", "blink": "blink"}
    prepare_dataset([path], tmp_path / "a", validation_fraction=0.0, progress=False, label_map=label_map)
    # blink (0.5 s) gives no window; "other" is not mapped; a zero-duration annotation labels nothing
    assert _labelled(tmp_path / "a") == [("", 0.0, 400), ("task", 2.0, 1000), ("", 7.0, 400), ("rest", 9.0, 1200),
                                         ("", 15.0, 200), ("", 16.5, 700)]
    # the same map as text; whole-file labels fill the stretches no annotation labels
    prepare_dataset([path], tmp_path / "b", validation_fraction=0.0, progress=False,
                    label_map="stim=task,rest=rest,blink=blink", file_labels={"rec*.fif": "session"})
    assert [label for label, *_ in _labelled(tmp_path / "b")] == ["session", "task", "session", "rest", "session",
                                                                  "session"]
    # labels off: one unlabelled segment, every sample kept
    prepare_dataset([path], tmp_path / "c", validation_fraction=0.0, progress=False, labels="none")
    assert _labelled(tmp_path / "c") == [("", 0.0, 4000)]


def test_cli_label_options(tmp_path, capsys):
    from neurorvq.pipelines.cli import main

    path = _annotated_fif(tmp_path)
    (tmp_path / "files.json").write_text(json.dumps({"*.fif": "session"}))
    with pytest.warns(UserWarning, match="no prepared recording has annotations \\['nothing'\\]"):
        code = main(["prepare", str(path), "-o", str(tmp_path / "out"), "--validation-fraction", "0",
                     "--label-map", "stim=task,nothing=x", "--file-labels", str(tmp_path / "files.json")])
    assert code == 0
    assert "session 2, task 1" in capsys.readouterr().out
    assert main(["prepare", str(path), "-o", str(tmp_path / "bad"), "--label-map", "stim"]) == 2
    assert "--label-map: 'stim' is not NAME=LABEL" in capsys.readouterr().err
    assert main(["prepare", str(path), "-o", str(tmp_path / "bad"), "--no-labels", "--file-labels", "*=x"]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(label_map="T0:rest"), "'T0:rest' is not NAME=LABEL"),
    (dict(label_map="T0=rest,T0=task"), "given two labels"),
    (dict(label_map=["T0", "rest"]), "label_map must be a dict"),
    (dict(label_map={"T0": ""}), "non-empty string"),
    (dict(label_map={"T0": "rest", "*.edf": {"T1": "x"}}), "not a mix of both"),
    (dict(label_map={"*.edf": {"T1": 3}}), "non-empty string"),
    (dict(label_map={"T0": 3}), r"label_map\['T0'\]: a label must be a non-empty string"),
    (dict(file_labels={"*.edf": None}), "non-empty string"),
    (dict(label_map="missing.json"), "JSON file missing.json not found"),
    (dict(labels="mine"), "labels must be one of"),
    (dict(labels="none", file_labels={"*": "x"}), "turns labels off"),
])
def test_invalid_label_mappings_are_clear_errors(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        resolve_labels(**kwargs)
    with pytest.raises(ValueError, match=message):  # before any file is read or written
        prepare_dataset([tmp_path / "nothing.edf"], tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_label_mapping_from_json_and_builtin_rules(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read JSON file"):
        parse_label_mapping(str(bad))
    nested = tmp_path / "map.json"
    nested.write_text(json.dumps({"*R03.edf": {"T1": "left"}}))
    rules = resolve_labels(label_map=str(nested))
    assert rules.annotation_map(Path("S001R03.edf")) == {"T1": "left"} and rules.annotation_map(Path("x.edf")) == {}
    builtin = resolve_labels()
    assert builtin.file_label(Path("eegmat/Subject07_2.edf")) == "arithmetic"
    assert builtin.file_label(Path("S010R02.edf")) == "eyes_closed"
    for run in (3, 5, 7, 9, 11, 13):
        assert builtin.annotation_map(Path(f"S001R{run:02d}.edf"))["T2"] == "motor_execution"
        assert builtin.annotation_map(Path(f"S001R{run + 1:02d}.edf"))["T1"] == "motor_imagery"
    assert builtin.file_label(Path("yasa/data_resting_EO_200Hz_raw.fif")) == ""
    by_folder = resolve_labels(file_labels="eegmat/*_1.edf=rest")  # a pattern with a / matches the path's end
    assert by_folder.file_label(Path("/data/eegmat/Subject01_1.EDF")) == "rest"
    assert by_folder.file_label(Path("/data/other/Subject01_1.edf")) == ""


def test_extractor_segments_window_the_preprocessed_recording(tmp_path):
    from neurorvq.tokenizer import NeuroRVQFeatureExtractor

    extractor = NeuroRVQFeatureExtractor(window_patches=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 200 * 10)) * 20e-6
    whole = extractor(x, channel_names=["Cz", "Pz"], sampling_rate=200)
    cut = extractor(x, channel_names=["Cz", "Pz"], sampling_rate=200, segments=[(0, 3), (3, 3.5), (3.5, np.inf)],
                    min_segment_seconds=1.0)
    assert cut["start_seconds"].tolist() == [0.0, 2.0, 3.5, 5.5, 7.5, 9.5]
    assert cut["segment_index"].tolist() == [0, 0, 2, 2, 2, 2]
    assert cut["padding_mask"][:, 0].sum(-1).tolist() == [400, 200, 400, 400, 400, 100]
    # filtering ran on the whole recording: the segments are slices of the same preprocessed signal
    joined = np.concatenate([w[:, : int(m[0].sum())] for w, m in zip(whole["input_values"], whole["padding_mask"])], -1)
    assert np.array_equal(cut["input_values"][2][:, :400], joined[:, 700:1100])
    with pytest.raises(ValueError, match="0 <= start < stop"):
        extractor(x, channel_names=["Cz", "Pz"], sampling_rate=200, segments=[(2, 1)])
    with pytest.raises(ValueError, match="one recording"):
        extractor([x, x], channel_names=["Cz", "Pz"], sampling_rate=200, segments=[(0, 1)])


def test_tokenize_dataset_carries_labels(tmp_path):
    import torch

    from neurorvq.lbm.data import load_codes, tokenize_dataset
    from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer

    prepared = tmp_path / "prepared"
    prepare_dataset([_annotated_fif(tmp_path)], prepared, validation_fraction=0.0, progress=False,
                    label_map={"stim": "task", "rest": "rest"})
    torch.manual_seed(0)
    tokenizer = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(REPO_ROOT / "configs/tokenizer/tiny.json"))).eval()
    result = tokenize_dataset(prepared, tokenizer, tmp_path / "codes", batch_size=4)
    assert not result["reused_cache"] and result["windows"] == {"train": 5, "validation": 0}
    codes, windows = load_codes(tmp_path / "codes", "train"), load_prepared(prepared, "train")
    assert "label" in codes.column_names and "start_seconds" not in codes.column_names
    assert list(codes["label"]) == list(windows["label"]) == ["", "task", "", "rest", ""]
    assert list(load_codes(tmp_path / "codes", "validation")["label"]) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes", "prepared", "rec_raw.fif"]  # no scratch left


# ---- the corpus policy: reserved hold-out subjects and the corpus' labels, as data ---------------------------

# shared/data/eeg/README.md, "Split discipline": EEGMAT Subjects 30-35 and EEGMMIDB S020-S024, S032, S042, S047, S088
README_RESERVED = ([f"eegmat/Subject{n}" for n in range(30, 36)]
                   + [f"eegmmidb/S{n:03d}" for n in (20, 21, 22, 23, 24, 32, 42, 47, 88)])


def test_every_reserved_subject_of_the_readme_is_skipped(tmp_path):
    # file names as the corpus lays them out (EEGMAT flat, EEGMMIDB a folder per subject); the files are never read:
    # reserved subjects are skipped from their names, before any file is opened
    corpus, files = tmp_path / "corpus", []
    for subject in README_RESERVED:
        dataset, name = subject.split("/")
        for relative in ([f"{name}_1.edf", f"{name}_2.edf"] if dataset == "eegmat" else
                         [f"{name}/{name}R01.edf", f"{name}/{name}R04.edf"]):
            path = corpus / dataset / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not read")
            files.append(path)
    with pytest.warns(UserWarning, match="is reserved for the hold-out set"), \
            pytest.raises(ValueError, match="no recording could be prepared") as error:
        prepare_dataset([corpus], tmp_path / "prepared", progress=False)
    for path in files:
        assert f"{path}: reserved hold-out subject" in str(error.value)
    assert not (tmp_path / "prepared").exists()


def test_the_reserved_list_is_the_readmes(eeg_dir):
    import re

    from neurorvq.tokenizer.data import load_corpus_policy

    line = next(line for line in (eeg_dir / "README.md").read_text().splitlines() if "Reserved subjects" in line)
    eegmat, eegmmidb = line.split("EEGMAT", 1)[1].split("EEGMMIDB", 1)
    named = {f"eegmat/Subject{n}" for a, b in re.findall(r"(\d+)\s*[–-]\s*(\d+)", eegmat) for n in range(int(a), int(b) + 1)}
    named |= {f"eegmmidb/S{n:03d}" for a, b in re.findall(r"S(\d{3})\s*[–-]\s*S(\d{3})", eegmmidb)
              for n in range(int(a), int(b) + 1)}
    named |= {f"eegmmidb/S{n}" for n in re.findall(r"S(\d{3})", eegmmidb)}
    assert named == set(README_RESERVED)
    policy = load_corpus_policy()
    assert all(policy.is_reserved(subject) for subject in named)
    assert not any(policy.is_reserved(s) for s in ("eegmat/Subject29", "eegmat/Subject00", "eegmmidb/S019",
                                                   "eegmmidb/S001", "eegmmidb/S025"))


def test_corpus_policy_is_a_data_file_and_a_prepare_option(tmp_path):
    from neurorvq.pipelines.cli import main
    from neurorvq.tokenizer.data import DEFAULT_CORPUS_POLICY, load_corpus_policy

    shipped = load_corpus_policy()
    assert shipped.source == str(DEFAULT_CORPUS_POLICY) and DEFAULT_CORPUS_POLICY.parent.name == "corpus"
    # one copy: configs/corpus/shared-eeg.json is the file the package ships (and `prepare` reads by default)
    assert (REPO_ROOT / "configs" / "corpus" / "shared-eeg.json").resolve() == DEFAULT_CORPUS_POLICY.resolve()
    assert resolve_labels(policy=shipped).to_dict() == resolve_labels(label_map=shipped.label_map,
                                                                      file_labels=shipped.file_labels).to_dict()
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"reserved_subjects": ["lab/P0?"], "file_labels": {"*_rest.edf": "rest"}}))
    policy = load_corpus_policy(mine)
    assert policy.is_reserved("lab/P07") and not policy.is_reserved("lab/P17")
    assert resolve_labels(policy=policy).file_label(Path("x/P07_rest.edf")) == "rest"
    for text, words in [("[]", "JSON object"), ('{"reserved": []}', "keys among"),
                        ('{"reserved_subjects": "S088"}', "list of subject ids"),
                        ('{"file_labels": {"*.edf": ""}}', "non-empty string"), ("{", "not valid JSON")]:
        mine.write_text(text)
        with pytest.raises(ValueError, match=words):
            load_corpus_policy(mine)
    assert main(["prepare", str(tmp_path), "-o", str(tmp_path / "out"), "--corpus-policy", str(mine)]) == 2
    assert main(["prepare", str(tmp_path), "-o", str(tmp_path / "out"), "--corpus-policy",
                 str(tmp_path / "missing.json")]) == 2
