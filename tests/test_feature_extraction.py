"""Tests for the channel mapping and the NeuroRVQ feature extractor (real EEG from shared/data/eeg)."""

from __future__ import annotations

import json
import shutil
import warnings

import mne
import numpy as np
import pytest
import torch
from scipy import signal

from neurorvq.tokenizer.channels import (
    CHANNEL_VOCABULARY,
    channel_indices,
    map_channel_names,
    normalize_channel_name,
)
from neurorvq.tokenizer.feature_extraction_neurorvq import NeuroRVQFeatureExtractor, infer_channel_type

mne.set_log_level("ERROR")
FS_OUT = 200


@pytest.fixture(scope="module")
def fe() -> NeuroRVQFeatureExtractor:
    return NeuroRVQFeatureExtractor()


def _real_samples(mask) -> np.ndarray:
    """Real samples per channel, summed over windows: [C]."""
    return np.asarray(mask).sum(axis=(0, 2))


def _sine(freq: float, fs: float, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(round(seconds * fs))) / fs
    return amplitude * np.sin(2 * np.pi * freq * t)


def _amplitude_at(x: np.ndarray, fs: float, freq: float) -> float:
    """Amplitude of the `freq` component of a 1-D signal (Hann-windowed FFT, coherent-gain corrected)."""
    w = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    freqs = np.fft.rfftfreq(len(x), 1 / fs)
    return float(spectrum[np.argmin(np.abs(freqs - freq))])


# ---------------------------------------------------------------- channel names


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Fc5.", "fc5"),
        ("C5..", "c5"),
        ("T10.", "t10"),
        ("Fp1.", "fp1"),
        ("EEG Fp1", "fp1"),
        ("EEG Fpz-Cz", "fpz"),
        ("Fp1-REF", "fp1"),
        ("EEG T3-Ref", "t3"),
        ("C3-LE", "c3"),
        ("Cz-AVG", "cz"),
        ("O1-M2", "o1"),
        ("F4-A1", "f4"),
        (" CZ ", "cz"),
        ("POz", "poz"),
        ("M1", "a1"),
        ("m2", "a2"),
        ("EEG M1-REF", "a1"),
        ("Foo", "foo"),
    ],
)
def test_normalize_channel_name(label, expected):
    assert normalize_channel_name(label) == expected


def test_map_channel_names_keeps_order_and_positions():
    names, kept = map_channel_names(["EEG O2", "Fc5.", "M1", "Cz-REF"])
    assert names == ["o2", "fc5", "a1", "cz"]
    assert kept == [0, 1, 2, 3]


def test_map_channel_names_unknown_raise_lists_all_and_names_the_flag():
    with pytest.raises(ValueError) as info:
        map_channel_names(["Cz", "Xyz1", "FT9", "Oz"])
    message = str(info.value)
    assert "Xyz1" in message and "FT9" in message and "drop" in message
    assert "'Cz'" not in message


def test_map_channel_names_drop_warns_and_returns_positions():
    with pytest.warns(UserWarning, match="Xyz1"):
        names, kept = map_channel_names(["Cz", "Xyz1", "Oz"], on_unknown="drop")
    assert names == ["cz", "oz"] and kept == [0, 2]


def test_map_channel_names_duplicate_names_both():
    with pytest.raises(ValueError, match="several channels") as info:
        map_channel_names(["Cz", "Fz", "EEG CZ-REF"])
    assert "'Cz'" in str(info.value) and "'EEG CZ-REF'" in str(info.value)


def test_map_channel_names_none_left_and_bad_flag():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no channel"):
        map_channel_names(["Xyz"], on_unknown="drop")
    with pytest.raises(ValueError, match="on_unknown"):
        map_channel_names(["Cz"], on_unknown="ignore")


def test_channel_indices():
    assert len(CHANNEL_VOCABULARY) == 104
    assert channel_indices(["a1", "cz", "tp9"]) == [0, 36, 103]
    with pytest.raises(ValueError, match="Cz"):
        channel_indices(["a1", "Cz"])


@pytest.mark.parametrize(
    ("label", "kind"),
    [("ECG ECG", "ecg"), ("EOG horizontal", "eog"), ("EMG submental", "emg"), ("Resp oro-nasal", "misc"),
     ("Temp rectal", "misc"), ("Event marker", "misc"), ("EEG A2-A1", "misc"), ("BIP1", "misc"),
     ("acc_x", "misc"), ("EEG Fpz-Cz", None), ("Fc5.", None), ("T7", None)],
)
def test_infer_channel_type(label, kind):
    assert infer_channel_type(label) == kind


# ---------------------------------------------------------------- real recordings


def test_eegmmidb_edf(fe, eeg_dir):
    out = fe(eeg_dir / "eegmmidb/S001/S001R01.edf")
    x, mask = out["input_values"], out["padding_mask"]
    # 64 channels -> A = 256 // 64 = 4 patches; 60 s at 160 Hz -> 12000 samples at 200 Hz = 15 full windows
    assert x.shape == (15, 64, 4 * 200) and mask.shape == x.shape
    assert x.dtype == np.float32 and mask.dtype == np.int64
    assert out["sampling_rate"] == FS_OUT
    raw_names = mne.io.read_raw_edf(eeg_dir / "eegmmidb/S001/S001R01.edf").ch_names
    assert out["channel_names"] == [n.rstrip(".").lower() for n in raw_names]
    assert out["channel_names"][:3] == ["fc5", "fc3", "fc1"]
    assert mask.all()
    assert 1.0 < np.std(x) < 200.0  # microvolts, not Volts
    assert np.abs(x).max() < 600.0  # clipped at 500 µV before resampling (ringing may overshoot slightly)


def test_eegmmidb_torch_output(fe, eeg_dir):
    out = fe(str(eeg_dir / "eegmmidb/S001/S001R01.edf"), return_tensors="pt")
    assert isinstance(out["input_values"], torch.Tensor) and out["input_values"].dtype == torch.float32
    assert isinstance(out["padding_mask"], torch.Tensor) and out["padding_mask"].dtype == torch.int64
    assert tuple(out["input_values"].shape) == (15, 64, 800)
    assert isinstance(out["channel_names"], list) and len(out["channel_names"]) == 64


def test_eegmat_edf_retypes_non_eeg_and_pads_tail(fe, eeg_dir):
    out = fe(eeg_dir / "eegmat/Subject00_2.edf")
    names = out["channel_names"]
    # 21 channels in the file; 'EEG A2-A1' and 'ECG ECG' are not EEG
    assert len(names) == 19 and "a2" not in names
    assert names[:2] == ["fp1", "fp2"] and {"t3", "t4", "t5", "t6", "cz"} <= set(names)
    x, mask = out["input_values"], out["padding_mask"]
    A = 256 // 19  # 13 patches per window
    assert x.shape == (5, 19, A * 200)
    total = 62 * FS_OUT  # 31000 samples at 500 Hz
    assert (_real_samples(mask) == total).all()
    tail = total - 4 * A * 200  # real samples in the last window
    assert mask[:4].all()
    assert mask[4, :, :tail].all() and not mask[4, :, tail:].any()
    assert not x[4, :, tail:].any() and x[4, :, :tail].std() > 1.0


def test_eeglab_set_channels(fe, eeg_dir):
    path = eeg_dir / "eeglab_sample/eeglab_data.set"
    out = fe(path)
    names = out["channel_names"]
    # 32 channels; EOG1/EOG2 are typed away by name; the other 30 labels are all vocabulary names
    assert len(names) == 30 and names[0] == "fpz"
    assert {"po7", "poz", "po8", "oz"} <= set(names) and not any("eog" in n for n in names)
    raw = mne.io.read_raw_eeglab(path)
    total = int(raw.n_times / raw.info["sfreq"] * FS_OUT)  # 238.3 s -> 47662 samples
    assert (_real_samples(out["padding_mask"]) == total).all()
    assert out["input_values"].shape[1:] == (30, 8 * 200)  # A = 256 // 30 = 8


def test_eeglab_raw_unknown_channel_raise_and_drop(fe, eeg_dir):
    raw = mne.io.read_raw_eeglab(eeg_dir / "eeglab_sample/eeglab_data.set", preload=True)
    raw.crop(0, 20)
    raw.rename_channels({"F3": "X1", "F4": "Nasion"})
    with pytest.raises(ValueError) as info:
        fe(raw)
    assert "X1" in str(info.value) and "Nasion" in str(info.value) and "on_unknown_channel" in str(info.value)
    with pytest.warns(UserWarning, match="X1"):
        out = fe(raw, on_unknown_channel="drop")
    assert len(out["channel_names"]) == 28 and "f3" not in out["channel_names"]


def test_real_file_with_unmapped_labels(eeg_dir):
    path = eeg_dir / "hypyp_eyes_closed/eyes-closed-1.edf"  # FT9 / FT10 are not in the vocabulary
    with pytest.raises(ValueError, match="FT9"):
        NeuroRVQFeatureExtractor()(path)
    with pytest.warns(UserWarning, match="FT10"):
        out = NeuroRVQFeatureExtractor(on_unknown_channel="drop")(path)
    assert len(out["channel_names"]) == 29
    assert (_real_samples(out["padding_mask"]) == 50 * FS_OUT).all()


def test_yasa_text_files(fe, eeg_dir, tmp_path):
    out = fe(eeg_dir / "yasa_samples/data_N2_spindles_15sec_200Hz.txt", channel_names=["C4-A1"])
    assert out["channel_names"] == ["c4"]
    assert out["input_values"].shape == (1, 1, 256 * 200)
    assert _real_samples(out["padding_mask"]).tolist() == [15 * FS_OUT]
    raw_uv = np.loadtxt(eeg_dir / "yasa_samples/data_N2_spindles_15sec_200Hz.txt")
    assert 0.3 < out["input_values"][0, 0, :3000].std() / raw_uv.std() < 1.5  # µV stay µV
    out = fe(eeg_dir / "yasa_samples/data_N3_no-spindles_30sec_100Hz.txt", channel_names=["Cz"])
    assert _real_samples(out["padding_mask"]).tolist() == [30 * FS_OUT]  # rate 100 Hz parsed from the name
    copy = tmp_path / "n3.txt"
    shutil.copy(eeg_dir / "yasa_samples/data_N3_no-spindles_30sec_100Hz.txt", copy)
    with pytest.raises(ValueError, match="sampling"):
        fe(copy, channel_names=["Cz"])
    assert _real_samples(fe(copy, channel_names=["Cz"], sampling_rate=100)["padding_mask"]).tolist() == [6000]
    with pytest.raises(ValueError, match="channel_names"):
        fe(copy, sampling_rate=100)


def test_sleep_edf_keeps_only_eeg(fe, eeg_dir):
    out = fe(eeg_dir / "sleep_edf_excerpt/short_psg.edf")
    assert out["channel_names"] == ["fpz", "pz"]  # EOG, resp, EMG, temp, event dropped; bipolar -> first
    assert out["input_values"].shape == (3, 2, 128 * 200)
    assert (_real_samples(out["padding_mask"]) == 300 * FS_OUT).all()


def test_epochs_windowed_separately(fe, eeg_dir):
    raw = mne.io.read_raw_edf(eeg_dir / "eegmmidb/S001/S001R01.edf", preload=True).crop(0, 12, include_tmax=False)
    epochs = mne.make_fixed_length_epochs(raw, duration=3.0, preload=True)
    out = fe(epochs)
    assert out["input_values"].shape == (4, 64, 800)
    mask = out["padding_mask"]
    assert mask[:, :, :600].all() and not mask[:, :, 600:].any()  # 3 s = 600 samples of 800


# ---------------------------------------------------------------- preprocessing


def test_band_limits_dc_and_line_noise(fe):
    fs, seconds = 500, 20
    uv = 20 * np.sin(2 * np.pi * 10 * np.arange(fs * seconds) / fs)
    uv = uv + 30 * np.sin(2 * np.pi * 60 * np.arange(fs * seconds) / fs) + 200.0
    volts = np.stack([uv, 0.5 * uv]) * 1e-6
    out = fe(volts, channel_names=["Cz", "Pz"], sampling_rate=fs, window_patches=20)
    assert out["input_values"].shape == (1, 2, 4000)
    y = out["input_values"][0, 0, 400:-400].astype(np.float64)  # away from the filter edges
    assert abs(_amplitude_at(y, FS_OUT, 10) - 20) < 1.0
    assert _amplitude_at(y, FS_OUT, 60) < 0.05
    assert abs(y.mean()) < 0.5
    assert abs(_amplitude_at(out["input_values"][0, 1, 400:-400], FS_OUT, 10) - 10) < 0.5


def test_preprocess_matches_released_recipe(fe):
    fs = 250.0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2500)).cumsum(axis=1) * 5
    expected = x.copy()
    for f0 in (50.0, 60.0, 100.0):
        b, a = signal.iirnotch(f0, f0 / 2, fs=fs)
        expected = signal.filtfilt(b, a, expected, axis=-1)
    b, a = signal.butter(3, [0.5, 44.5], btype="bandpass", fs=fs)
    expected = signal.resample(np.clip(signal.filtfilt(b, a, expected, axis=-1), -500, 500), 2000, axis=-1)
    np.testing.assert_allclose(fe.preprocess(x, fs), expected, rtol=0, atol=1e-9)


def test_clipping_at_500_microvolts(fe):
    volts = _sine(10, FS_OUT, 4, 600e-6)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fe(volts, channel_names=["Oz"], sampling_rate=FS_OUT)
    y = out["input_values"][0, 0, :800]  # the 4 s of real samples
    assert np.abs(y).max() == pytest.approx(500.0)
    assert (np.abs(y) >= 499.999).mean() > 0.2  # the sine's crests are flattened


def test_microvolts_passed_as_volts_warns(fe):
    with pytest.warns(UserWarning, match="units"):
        fe(_sine(10, FS_OUT, 4, 50.0)[None], channel_names=["Oz"], sampling_rate=FS_OUT)


# ---------------------------------------------------------------- windowing, batching, inputs


def test_short_recording_is_padded(fe):
    out = fe(np.ones((2, 100)) * 1e-6, channel_names=["C3", "C4"], sampling_rate=FS_OUT)
    assert out["input_values"].shape == (1, 2, 128 * 200)
    assert _real_samples(out["padding_mask"]).tolist() == [100, 100]


def test_window_patches_override_and_overlap():
    rng = np.random.default_rng(1)
    volts = rng.standard_normal((2, 2000)) * 1e-5
    plain = NeuroRVQFeatureExtractor()(volts, channel_names=["C3", "C4"], sampling_rate=FS_OUT, window_patches=4)
    assert plain["input_values"].shape == (3, 2, 800)
    assert _real_samples(plain["padding_mask"]).tolist() == [2000, 2000]
    overlap = NeuroRVQFeatureExtractor(window_stride_patches=2)(
        volts, channel_names=["C3", "C4"], sampling_rate=FS_OUT, window_patches=4
    )
    # starts at 0, 400, 800, 1200 samples; the last window ends exactly at 2000
    assert overlap["input_values"].shape == (4, 2, 800) and overlap["padding_mask"].all()
    joined = np.concatenate([plain["input_values"][0, :, 400:], plain["input_values"][1, :, :400]], axis=1)
    np.testing.assert_array_equal(overlap["input_values"][1], joined)


def test_batch_list_and_torch_input(fe):
    rng = np.random.default_rng(2)
    volts = rng.standard_normal((4, 1000)) * 1e-5
    names = ["Fz", "Cz", "Pz", "Oz"]
    single = fe(volts, channel_names=names, sampling_rate=FS_OUT)
    both = fe([volts, torch.from_numpy(volts)], channel_names=names, sampling_rate=FS_OUT)
    assert both["input_values"].shape[0] == 2 * single["input_values"].shape[0]
    np.testing.assert_allclose(both["input_values"][1], single["input_values"][0], atol=1e-5)
    raw_a = mne.io.RawArray(volts, mne.create_info(names, FS_OUT, "eeg"))
    raw_b = mne.io.RawArray(volts[:3], mne.create_info(names[:3], FS_OUT, "eeg"))
    with pytest.raises(ValueError, match="same channels"):
        fe([raw_a, raw_b])


def test_save_and_load_round_trip(tmp_path):
    fe = NeuroRVQFeatureExtractor(notch_frequencies=[50.0], window_patches=2, on_unknown_channel="drop")
    fe.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["window_patches"] == 2 and config["notch_frequencies"] == [50.0]
    assert len(config["channel_vocabulary"]) == 104
    loaded = NeuroRVQFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == fe.to_dict()
    volts = np.random.default_rng(3).standard_normal((2, 900)) * 1e-5
    a = fe(volts, channel_names=["C3", "C4"], sampling_rate=300)
    b = loaded(volts, channel_names=["C3", "C4"], sampling_rate=300)
    assert a["input_values"].shape == (2, 2, 400)
    np.testing.assert_array_equal(a["input_values"], b["input_values"])


# ---------------------------------------------------------------- bad input


def _volts(n_channels=3, n_times=400):
    return np.random.default_rng(4).standard_normal((n_channels, n_times)) * 1e-5


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_channel(fe, bad):
    volts = _volts()
    volts[2, 17] = bad
    with pytest.raises(ValueError, match="NaN or Inf") as info:
        fe(volts, channel_names=["C3", "Cz", "C4"], sampling_rate=FS_OUT)
    assert "C4" in str(info.value) and "C3" not in str(info.value)


@pytest.mark.parametrize("shape", [(400,), (2, 3, 400)])
def test_wrong_rank(fe, shape):
    with pytest.raises(ValueError, match="rank"):
        fe(np.zeros(shape), channel_names=["C3", "C4", "Cz"], sampling_rate=FS_OUT)


def test_channel_name_count_mismatch(fe):
    with pytest.raises(ValueError, match="2 channel_names.*3 channels"):
        fe(_volts(), channel_names=["C3", "C4"], sampling_rate=FS_OUT)


def test_unknown_channel_in_array(fe):
    with pytest.raises(ValueError, match="Xyz"):
        fe(_volts(), channel_names=["C3", "Xyz", "C4"], sampling_rate=FS_OUT)
    with pytest.warns(UserWarning, match="Xyz"):
        out = fe(_volts(), channel_names=["C3", "Xyz", "C4"], sampling_rate=FS_OUT, on_unknown_channel="drop")
    assert out["channel_names"] == ["c3", "c4"]


@pytest.mark.parametrize("rate", [None, 0, -200, float("nan")])
def test_missing_or_bad_sampling_rate(fe, rate):
    with pytest.raises(ValueError, match="sampling_rate"):
        fe(_volts(), channel_names=["C3", "Cz", "C4"], sampling_rate=rate)


def test_missing_channel_names(fe):
    with pytest.raises(ValueError, match="channel_names"):
        fe(_volts(), sampling_rate=FS_OUT)


def test_corrupt_file(fe, tmp_path):
    path = tmp_path / "garbage.edf"
    path.write_bytes(np.random.default_rng(5).bytes(3000))
    with pytest.raises(ValueError, match="garbage.edf") as info:
        fe(path)
    assert info.value.__cause__ is not None


def test_missing_file(fe, tmp_path):
    with pytest.raises(ValueError, match="not found.*missing.edf"):
        fe(tmp_path / "missing.edf")


def test_too_many_tokens_for_window(fe):
    with pytest.raises(ValueError, match=r"C=3 .*A=100 .*max_patches=256"):
        fe(_volts(), channel_names=["C3", "Cz", "C4"], sampling_rate=FS_OUT, window_patches=100)
    with pytest.raises(ValueError, match=r"C=1 .*A=257 "):
        fe(_volts(1), channel_names=["Cz"], sampling_rate=FS_OUT, window_patches=257)
    small = NeuroRVQFeatureExtractor(max_patches=2)
    with pytest.raises(ValueError, match=r"C=3 .*max_patches=2"):
        small(_volts(), channel_names=["C3", "Cz", "C4"], sampling_rate=FS_OUT)


def test_no_eeg_channel(fe):
    raw = mne.io.RawArray(_volts(2), mne.create_info(["ECG", "Resp"], FS_OUT, ["ecg", "misc"]))
    with pytest.raises(ValueError, match="no EEG channel"):
        fe(raw)


def test_channel_names_with_raw_rejected(fe):
    raw = mne.io.RawArray(_volts(2), mne.create_info(["C3", "C4"], FS_OUT, "eeg"))
    with pytest.raises(ValueError, match="channel_names"):
        fe(raw, channel_names=["C3", "C4"])
    assert fe(raw)["channel_names"] == ["c3", "c4"]
