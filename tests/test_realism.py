"""The realism report measures what it claims, on real EEG (EEGMAT rest, 24 subjects x 20 s, read with MNE).

Planted defects (one channel +3 dB, a common signal in every channel, permuted channels, white noise, jumps at 1-s
edges) are each caught by the figure meant for them, beyond the floor the same figure has without the defect;
real vs real of the same subjects is at chance; window-level folds leak where grouped folds do not.
"""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from neurorvq.lbm.evaluation import realism_of_samples
from neurorvq.lbm.realism import format_report, realism_report, write_report
from neurorvq.lbm.realism_classifiers import two_sample_test
from neurorvq.lbm.realism_data import load_eeg
from neurorvq.lbm.realism_metrics import order_drift
from neurorvq.lbm.realism_pooled import format_realism
from neurorvq.pipelines.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

FS = 200.0
SUBJECTS = 24
SECONDS = 20.0  # per subject: five 4-s windows


@pytest.fixture(scope="module")
def eegmat(eeg_dir):
    """EEGMAT rest, seconds 20-40 of subjects 0-23, through `load_eeg` (MNE Raw -> µV at 200 Hz, EEG channels)."""
    raws = [mne.io.read_raw_edf(eeg_dir / "eegmat" / f"Subject{s:02d}_1.edf", preload=False, verbose="error")
            .crop(20, 20 + SECONDS, include_tmax=False).load_data(verbose="error") for s in range(SUBJECTS)]
    data = load_eeg(raws, sampling_rate=FS, group_pattern=r"Subject\d+")
    assert len(data.channel_names) == 19 and data.signals[0].shape == (19, int(SECONDS * FS))
    assert data.groups[:2] == ["Subject00", "Subject01"]
    # EEGMAT is ~10 µV: a unit error (Volts, mV) would show here
    assert 3 < np.median([x.std() for x in data.signals]) < 50
    return data


@pytest.fixture(scope="module")
def halves(eegmat):
    """(reference, other) = even and odd subjects: signals and groups of each."""
    x, g = eegmat.signals, eegmat.groups
    return (x[0::2], g[0::2]), (x[1::2], g[1::2])


def planted(halves, synthetic, classifiers=("bandpower", "covariance")) -> dict:
    """Report of `synthetic` (the odd subjects with a defect) against the even subjects, with the clean odd subjects
    as `other_real`: the floor is the same data without the defect."""
    (reference, reference_groups), (_, other_groups) = halves
    return realism_report(synthetic, reference, NAMES, FS, synthetic_groups=other_groups, real_groups=reference_groups,
                          other_real=halves[1][0], other_real_groups=other_groups, repeats=1,
                          classifiers=classifiers, covariance_bands=False)


NAMES = ["fp1", "fp2", "f3", "f4", "f7", "f8", "t3", "t4", "c3", "c4", "t5", "t6", "p3", "p4", "o1", "o2", "fz", "cz",
         "pz"]  # EEGMAT's EDF order


def metric(report: dict, key: str) -> tuple[float, float]:
    row = report["metrics"][key]
    return row["synthetic"], row["floor"]


def test_loader_keeps_the_edf_montage(eegmat):
    assert eegmat.channel_names == NAMES


def test_real_vs_real_of_the_same_subjects_is_at_chance(eegmat):
    # every subject's 4-s windows dealt alternately into two sets; a subject's windows of both sets share its group
    length = int(4 * FS)
    a, b, groups_a, groups_b = [], [], [], []
    for x, group in zip(eegmat.signals, eegmat.groups):
        for i in range(x.shape[-1] // length):
            (a if i % 2 == 0 else b).append(x[:, i * length:(i + 1) * length])
            (groups_a if i % 2 == 0 else groups_b).append(group)
    for classifier in ("bandpower", "covariance", "learned"):
        result = two_sample_test(a, b, FS, groups_a, groups_b, classifier)
        assert result["n_windows_per_class"] == 48 and result["grouped"]
        assert 0.35 < result["accuracy"] < 0.65, (classifier, result)


def test_window_level_folds_leak_where_grouped_folds_do_not(halves):
    (reference, reference_groups), (other, other_groups) = halves
    for classifier in ("covariance", "bandpower"):
        leaky = two_sample_test(other, reference, FS, other_groups, reference_groups, classifier, grouped=False)
        grouped = two_sample_test(other, reference, FS, other_groups, reference_groups, classifier)
        # different subjects: with a subject's windows on both sides the classifier recognises subjects
        assert leaky["accuracy"] > 0.9, (classifier, leaky)
        assert grouped["accuracy"] < 0.65 and leaky["accuracy"] - grouped["accuracy"] > 0.3, (classifier, grouped)


def test_one_channel_3db_louder_is_seen_in_its_topography(halves):
    c3 = NAMES.index("c3")
    louder = [x.copy() for x in halves[1][0]]
    for x in louder:
        x[c3] *= 10 ** (3 / 20)
    report = planted(halves, louder)
    for band in ("delta", "theta", "alpha", "beta", "gamma"):
        row = report["metrics"][f"topography_max_db/{band}"]
        assert row["channel"] == "c3", (band, row)
        assert row["synthetic"] > row["floor"] + 1.0, (band, row)
        # against the same data without the defect: +3 dB at c3 less its share of the channel mean, -3/19 elsewhere
        change = np.subtract(row["per_channel_db"]["synthetic"], row["per_channel_db"]["floor"])
        assert change[c3] == pytest.approx(3 * 18 / 19, abs=0.01)
        assert np.delete(change, c3) == pytest.approx(np.full(18, -3 / 19), abs=0.01)
    # the maps' correlation drops, the global band power barely moves (one channel of 19)
    synthetic, floor = metric(report, "topography_r/beta")
    assert synthetic < floor - 0.08
    synthetic, floor = metric(report, "band_db/alpha")
    assert synthetic - floor == pytest.approx(3 / 19, abs=0.01)  # mean over channels of dB
    synthetic, floor = metric(report, "c2st/covariance")  # per-channel power is on the covariance diagonal
    assert synthetic > floor + 0.25


def test_a_common_signal_is_seen_in_the_correlation_matrix_and_covariance(halves):
    other = halves[1][0]
    cz = NAMES.index("cz")
    mixed = []
    for i, x in enumerate(other):
        source = other[(i + 1) % len(other)][cz]  # another subject's cz: a realistic common source
        mixed.append(x + 0.7 * source / source.std() * x.std(-1, keepdims=True))
    report = planted(halves, mixed)
    synthetic, floor = metric(report, "correlation_error/broadband")
    assert synthetic > 3 * floor and synthetic > floor + 0.08
    synthetic, floor = metric(report, "c2st/covariance")
    assert synthetic > floor + 0.15
    synthetic, floor = metric(report, "c2st/bandpower")  # its pair correlations
    assert synthetic > floor + 0.25
    # spatial structure, not topography: the band maps stay close to the floor
    synthetic, floor = metric(report, "topography_r/alpha")
    assert abs(synthetic - floor) < 0.1


def test_permuted_channels_are_seen_in_the_topography_and_covariance(halves):
    order = np.random.default_rng(0).permutation(len(NAMES))
    report = planted(halves, [x[order] for x in halves[1][0]])
    for band in ("alpha", "beta"):
        synthetic, floor = metric(report, f"topography_r/{band}")
        assert floor > 0.85 and synthetic < floor - 0.5, (band, synthetic, floor)
    synthetic, floor = metric(report, "correlation_error/broadband")
    assert synthetic > floor + 0.1
    synthetic, floor = metric(report, "c2st/covariance")
    assert synthetic > 0.9 and synthetic > floor + 0.3
    # the spectrum averaged over channels does not change
    synthetic, floor = metric(report, "slope")
    assert synthetic == pytest.approx(floor, abs=1e-6)


def test_white_noise_is_seen_in_the_spectrum_slope_and_band_power(halves):
    rng = np.random.default_rng(1)
    noisy = [x + 0.5 * x.std() * rng.standard_normal(x.shape) for x in halves[1][0]]
    report = planted(halves, noisy, classifiers=("bandpower", "learned"))
    synthetic, floor = metric(report, "band_db/gamma")
    assert synthetic > floor + 3
    synthetic, floor = metric(report, "band_db/alpha")
    assert abs(synthetic - floor) < 1.0  # the noise sits where EEG has little power
    synthetic, floor = metric(report, "slope")
    assert synthetic > floor + 0.3
    for key in ("c2st/bandpower", "c2st/learned"):
        synthetic, floor = metric(report, key)
        assert synthetic > 0.8 and synthetic > floor + 0.2, (key, synthetic, floor)
    spectra = report["maps"]["spectra"]
    top = np.asarray(spectra["frequencies"]) > 35
    assert np.mean(np.asarray(spectra["synthetic"])[top]) > 3 * np.mean(np.asarray(spectra["other_real"])[top])


def test_jumps_at_one_second_edges_are_seen_in_seams_and_within_window_spread(halves):
    rng = np.random.default_rng(2)
    blocky = []
    for x in halves[1][0]:  # every 1-s patch of every channel at its own gain (±3 dB): steps at patch edges
        gains = np.repeat(10 ** (rng.normal(0, 3, (1, x.shape[-1] // int(FS))) / 20), int(FS), axis=1)
        blocky.append(x * gains)
    report = planted(halves, blocky, classifiers=())
    synthetic, floor = metric(report, "seam")
    assert floor < 1.5 and synthetic > 2 * floor
    synthetic, floor = metric(report, "spread/within")
    assert synthetic > floor + 0.5
    assert report["metrics"]["seam"]["reference"] == pytest.approx(1.0, abs=0.5)


def test_half_split_floor_and_report_files(halves, tmp_path):
    (reference, reference_groups), (other, _) = halves
    rng = np.random.default_rng(3)
    synthetic = np.stack([x[:, :1600] + 0.5 * x.std() * rng.standard_normal((19, 1600)) for x in other])
    report = realism_report(synthetic, reference, NAMES, FS, real_groups=reference_groups, repeats=2,
                            classifiers=("bandpower",), covariance_bands=False)
    assert report["settings"]["floor"] == "half_split"
    row = report["metrics"]["c2st/bandpower"]
    assert len(row["runs"]["floor"]) == 2 and row["n_windows_per_class"] <= 30  # one half: 6 subjects x 5 windows
    assert row["synthetic"] > row["floor"] + 0.2
    assert report["counts"]["synthetic"] == {"items": 12, "windows": 24, "groups": 12}
    table = format_report(report)
    assert table.count("\n| ") == len(report["metrics"]) + 1  # header + one row per metric
    assert "| C2ST band power" in table and "0.50 (chance)" in table and "half of the reference" in table
    paths = write_report(report, tmp_path / "out")
    assert {p.name for p in paths} == {"report.json", "report.md", "c2st.png", "topomaps.png", "correlation.png",
                                       "spectra.png"}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["metrics"].keys() == report["metrics"].keys()
    assert all(p.stat().st_size > 5_000 for p in paths if p.suffix == ".png")
    before = (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_report(report, tmp_path / "out")
    assert (tmp_path / "out" / "report.md").read_text() == before
    write_report(report, tmp_path / "out", overwrite=True)


def test_half_split_floor_is_one_half_against_the_other_and_synthetic_meets_the_reference_half(halves,
                                                                                              monkeypatch):
    """Without other_real every repeat's classifiers see the reference half (the synthetic and the floor test
    share its windows) and, for the floor, the other half: disjoint subjects, together every reference subject."""
    from neurorvq.lbm import realism

    (reference, reference_groups), (other, other_groups) = halves
    calls = []
    measure = realism._cross_validated_accuracy

    def spy(a, b, groups_a, groups_b, *args, **kwargs):
        calls.append((a.copy(), b.copy(), set(groups_a.tolist()), set(groups_b.tolist())))
        return measure(a, b, groups_a, groups_b, *args, **kwargs)

    monkeypatch.setattr(realism, "_cross_validated_accuracy", spy)
    splits, split = [], realism._split
    monkeypatch.setattr(realism, "_split", lambda *args: splits.append(split(*args)) or splits[-1])
    synthetic = [x[:, :1600] for x in other]  # 12 other subjects x two 4-s windows
    report = realism_report(synthetic, reference, NAMES, FS, synthetic_groups=other_groups,
                            real_groups=reference_groups, repeats=3, classifiers=("bandpower",),
                            covariance_bands=False)
    assert report["settings"]["floor"] == "half_split" and len(calls) == 2 * 3  # per repeat: synthetic, floor
    halves_seen, real_groups = set(), np.repeat(reference_groups, 5)  # five 4-s windows per reference subject
    for plan, (synthetic, ref_for_synthetic, synthetic_groups, ref_groups_s), (
            floor, ref_for_floor, floor_groups, ref_groups_f) in zip(splits, calls[0::2], calls[1::2]):
        assert synthetic_groups <= set(other_groups)  # the synthetic side is the synthetic set
        # its real side is the reference half, the one the descriptive figures of the repeat compare with
        assert ref_groups_s == set(real_groups[plan["reference"]]) and floor_groups == set(real_groups[plan["floor"]])
        # both tests against the same windows of one reference half
        assert ref_groups_s == ref_groups_f and np.array_equal(ref_for_synthetic, ref_for_floor)
        assert len(ref_groups_f) == 6 and len(floor_groups) == 6  # 12 reference subjects: 6 against 6
        assert not floor_groups & ref_groups_f and floor_groups | ref_groups_f == set(reference_groups)
        assert not {r.tobytes() for r in floor} & {r.tobytes() for r in ref_for_floor}  # no window on both sides
        halves_seen.add(frozenset(ref_groups_f))
    assert len(halves_seen) > 1  # random halves per repeat
    row = report["metrics"]["c2st/bandpower"]
    # the floor is real vs real of other subjects, not the reference half against itself (exactly 0.5 every repeat)
    assert not all(value == 0.5 for value in row["runs"]["floor"]) and row["floor_std"] > 0
    assert row["n_windows_per_class"] == 24  # min(synthetic 24, a half's 30 and the other half's 30)


def test_bad_inputs_raise_clear_errors(halves):
    (reference, groups), (other, other_groups) = halves
    good = reference[:4]
    with pytest.raises(ValueError, match="NaN"):
        bad = [x.copy() for x in good]
        bad[1][3, 10] = np.nan
        realism_report(bad, reference, NAMES, FS, real_groups=groups)
    with pytest.raises(ValueError, match="18 channels but channel_names names 19"):
        realism_report([x[:18] for x in good], reference, NAMES, FS, real_groups=groups)
    with pytest.raises(ValueError, match=r"\[N, C, T\]"):
        realism_report(np.zeros((19, 800)), reference, NAMES, FS, real_groups=groups)
    with pytest.raises(ValueError, match="at least 100 Hz"):
        realism_report(good, reference, NAMES, 64, real_groups=groups)
    with pytest.raises(ValueError, match="duplicates"):
        realism_report(good, reference, NAMES[:-1] + ["fp1"], FS, real_groups=groups)
    with pytest.raises(ValueError, match="at least 4"):  # half-vs-half floor from 3 subjects
        realism_report(good, reference[:3], NAMES, FS, real_groups=groups[:3])
    with pytest.raises(ValueError, match="shares group"):
        realism_report(good, reference, NAMES, FS, real_groups=groups, other_real=other, other_real_groups=groups)
    with pytest.raises(ValueError, match="flat"):
        flat = [x.copy() for x in good]
        flat[0][5] = 1.0
        realism_report(flat, reference, NAMES, FS, real_groups=groups)
    with pytest.raises(ValueError, match="no item is as long as one window"):
        realism_report([x[:, :500] for x in good], reference, NAMES, FS, real_groups=groups)
    with pytest.raises(ValueError, match="unknown classifier"):
        realism_report(good, reference, NAMES, FS, real_groups=groups, classifiers=("rocket",))
    with pytest.raises(ValueError, match="group ids for"):
        realism_report(good, reference, NAMES, FS, real_groups=groups[:-1])


def test_order_drift_separates_generation_order_from_electrodes(eegmat):
    signals, groups = eegmat.signals, eegmat.groups
    order_a = list(NAMES)
    order_b = order_a[::-1]
    drift = 0.3  # dB per channel generated later

    def generated(items, order):  # rows in `order`, each channel's power raised by its generation index
        index = [NAMES.index(n) for n in order]
        return [x[index] * 10 ** (drift * np.arange(len(order))[:, None] / 20) for x in items]

    result = order_drift(generated(signals[0::2], order_a), order_a, generated(signals[1::2], order_b), order_b, NAMES,
                         FS, real=signals, real_groups=groups)
    assert result["order_slope_db_per_channel"] == pytest.approx(drift, abs=0.05)
    assert result["floor"]["mean_abs_order_slope_db_per_channel"] < 0.05
    # without an order effect the same estimate is at its floor
    clean = order_drift(signals[0::2], order_a, [x[::-1] for x in signals[1::2]], order_b, NAMES, FS)
    assert abs(clean["order_slope_db_per_channel"]) < 0.05
    # the electrode part is the real montage's (the same channels either way)
    assert result["electrode_slope_db_per_channel"] == pytest.approx(clean["electrode_slope_db_per_channel"], abs=0.05)
    montage = result["montage_slopes_db_per_channel"]  # order_a is the montage order, order_b its reverse
    assert montage["a"] - montage["b"] == pytest.approx(2 * drift, abs=0.1)
    with pytest.raises(ValueError, match="same order"):
        order_drift(signals[:2], order_a, signals[2:4], order_a, NAMES, FS)


def test_evaluate_lbm_realism_block_uses_subjects_and_the_training_floor(halves):
    (reference, reference_groups), (other, other_groups) = halves

    def rows(signals, subjects):
        return [{"input_values": x.astype(np.float32), "valid_samples": x.shape[-1], "channel_names": NAMES,
                 "subject_id": s, "recording_id": s} for x, s in zip(signals, subjects)]

    rng = np.random.default_rng(4)
    samples = [x[:, :1600] + 0.5 * x.std() * rng.standard_normal((19, 1600)) for x in other]
    # a validation row of another montage is left out; so is a training row of a validation subject
    other_montage = {"input_values": reference[0][:4].astype(np.float32), "valid_samples": 4000,
                     "channel_names": NAMES[:4], "subject_id": "Subject99", "recording_id": "Subject99"}
    validation = rows(reference, reference_groups) + [other_montage]
    train = rows(other, other_groups) + rows(reference[:1], reference_groups[:1])
    report = realism_of_samples(samples, validation, NAMES, train_rows=train, classifiers=("bandpower",), repeats=1)
    assert report["settings"]["floor"] == "other_real"
    assert report["counts"]["real"]["groups"] == 12 and report["counts"]["other_real"]["groups"] == 12
    assert report["metrics"]["c2st/bandpower"]["synthetic"] > report["metrics"]["c2st/bandpower"]["floor"]
    assert format_realism(report) == format_report(report)  # what `neurorvq evaluate-lbm` prints
    missing = realism_of_samples(samples, validation, ["fp1", "cpz"], classifiers=("bandpower",), repeats=1)
    assert "error" in missing and "cpz" in missing["error"]
    assert format_realism(missing).startswith("realism not computed")


def test_cli_writes_the_report_and_refuses_to_overwrite(halves, tmp_path, capsys):
    (reference, reference_groups), (other, other_groups) = halves
    rng = np.random.default_rng(5)
    for folder, signals, names in (("real", reference, reference_groups), ("synthetic", other, other_groups)):
        (tmp_path / folder).mkdir()
        for x, name in zip(signals, names):
            noisy = x + (0.5 * x.std() * rng.standard_normal(x.shape) if folder == "synthetic" else 0)
            info = mne.create_info([n.upper() if len(n) == 2 else n.capitalize() for n in NAMES], FS, "eeg")
            mne.io.RawArray(noisy * 1e-6, info, verbose="error").save(tmp_path / folder / f"{name}_raw.fif",
                                                                      verbose="error")
    args = ["realism", str(tmp_path / "synthetic"), str(tmp_path / "real"), "--group-pattern", r"Subject\d+",
            "--classifiers", "bandpower", "--repeats", "1", "--output", str(tmp_path / "out")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| C2ST band power" in printed and "12 groups" in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["real"]["groups"] == 12 and report["settings"]["channel_names"] == NAMES
    assert report["metrics"]["band_db/gamma"]["synthetic"] > report["metrics"]["band_db/gamma"]["floor"] + 3
    assert main(args) == 2  # the files exist
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_split_modules_names_import_from_their_old_homes_and_prepared_sets_carry_labels():
    """`lbm.realism` re-exports its data / metrics / classifier modules, `lbm.evaluation` what moved out of it;
    prepared rows keep their brain-state labels ("" when unlabelled), recordings have none."""
    from neurorvq.lbm import (count_models, evaluation, evaluation_plots, realism, realism_classifiers, realism_data,
                              realism_metrics, realism_pooled)
    from neurorvq.lbm.realism_data import prepared_set

    for home, old_home in ((realism_data, realism), (realism_metrics, realism), (realism_classifiers, realism),
                           (count_models, evaluation), (evaluation_plots, evaluation), (realism_pooled, evaluation)):
        for name in home.__all__:
            assert getattr(old_home, name) is getattr(home, name), f"{old_home.__name__}.{name}"
    rows = [{"input_values": np.full((2, 400), float(i)).tolist(), "valid_samples": 300, "channel_names": ["cz", "fp1"],
             "subject_id": f"s{i}", **({"label": "rest"} if i else {})} for i in range(2)]
    prepared = prepared_set(rows, ["fp1", "cz"])
    assert prepared.labels == ["", "rest"] and prepared.groups == ["s0", "s1"] and prepared.signals[1].shape == (2, 300)
    raw = mne.io.RawArray(np.ones((2, 800)) * 1e-6, mne.create_info(["Fp1", "Cz"], FS, "eeg"), verbose="error")
    assert load_eeg(raw).labels is None
