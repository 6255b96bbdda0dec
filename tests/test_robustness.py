"""Robustness matrix (issue 12): files, units, channels, models, outputs, training state, sampling controls.

Every case asserts the exact outcome: the error type and the words that tell the user what to do, or the
warning, or the untouched file. The kill -9 tests train tiny models in a subprocess that is SIGKILLed after a
checkpoint (once while writing the newest one) and check that the resumed run ends bit-identical to an
uninterrupted run, for the tokenizer and the LBM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer
from neurorvq.tokenizer.data import prepare_dataset
from neurorvq.tokenizer.trainer import TrainingArguments, latest_checkpoint
from neurorvq.tokenizer.training import train_tokenizer

from .conftest import REPO_ROOT

TINY_TOKENIZER = REPO_ROOT / "configs" / "tokenizer" / "tiny.json"
TINY_LBM = REPO_ROOT / "configs" / "lbm" / "tiny-depthwise.json"
SHORT = "eegmat/Subject02_2.edf"  # 62 s, 19 channels, 500 Hz
SHORT_2 = "eegmat/Subject03_2.edf"


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from neurorvq.pipelines.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


# ====================================================================================================
# Training state: existing runs, exact resume after kill -9, half-written checkpoints
# ====================================================================================================


@pytest.fixture(scope="module")
def prepared(eeg_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("robust-prepared")
    prepare_dataset([eeg_dir / SHORT, eeg_dir / SHORT_2], output, validation_fraction=0.0, progress=False)
    return output


def _tokenizer_config() -> NeuroRVQConfig:
    config = NeuroRVQConfig.from_json_file(str(TINY_TOKENIZER))
    config.quantizer_type, config.dead_code_threshold = "standard", 0.5  # restarts draw from the global RNG
    return config


def _tokenizer_args(output, max_steps=12, **kw) -> TrainingArguments:
    # 10 windows, batch 2: 5 batches per epoch; checkpoints at 3, 6, 9, 12. Resuming from step 9 (epoch 1, one
    # batch left) continues mid-epoch, then starts epoch 2 (data order of a later epoch after a resume)
    return TrainingArguments(output_dir=str(output), max_steps=max_steps, batch_size=2, warmup_steps=2, save_steps=3,
                             eval_steps=100, logging_steps=1, progress=False, deterministic=True, seed=3,
                             save_total_limit=5, **kw)


def _run_killed(script: str, *args) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter with this process's thread count; it is expected to die by SIGKILL."""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONUNBUFFERED="1")
    code = f"import torch; torch.set_num_threads({torch.get_num_threads()})\n" + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=str(REPO_ROOT))


def _losses(output: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def _assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert set(left) == set(right)
    different = [name for name in left if not torch.equal(left[name], right[name])]
    assert not different, f"weights differ after resume: {different[:5]}"


_KILL_TOKENIZER = """
import os, signal, sys
import accelerate
from neurorvq.tokenizer import NeuroRVQConfig
from neurorvq.tokenizer.trainer import TrainingArguments
from neurorvq.tokenizer.training import train_tokenizer

config_path, data, output = sys.argv[1:4]
original = accelerate.Accelerator.save_state
def save_state(self, output_dir=None, **kw):
    result = original(self, output_dir, **kw)
    if output_dir.endswith("step-12"):  # killed while writing the newest checkpoint (state saved, not finished)
        os.kill(os.getpid(), signal.SIGKILL)
    return result
accelerate.Accelerator.save_state = save_state
config = NeuroRVQConfig.from_json_file(config_path)
config.quantizer_type, config.dead_code_threshold = "standard", 0.5
train_tokenizer(config, data, TrainingArguments(output_dir=output, max_steps=12, batch_size=2, warmup_steps=2,
    save_steps=3, eval_steps=100, logging_steps=1, progress=False, deterministic=True, seed=3, save_total_limit=5))
"""


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_kill_9_while_checkpointing_then_resume_is_bit_identical_tokenizer(prepared, tmp_path):
    from accelerate.state import AcceleratorState

    straight = tmp_path / "straight"
    train_tokenizer(_tokenizer_config(), prepared, _tokenizer_args(straight))
    AcceleratorState._reset_state(reset_partial_state=True)

    killed = tmp_path / "killed"
    result = _run_killed(_KILL_TOKENIZER, TINY_TOKENIZER, prepared, killed)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    # the kill hit the step-12 save: only the hidden temporary folder exists; steps 3, 6 and 9 are complete
    assert sorted(p.name for p in (killed / "checkpoints").glob("step-*")) == ["step-3", "step-6", "step-9"]
    assert (killed / "checkpoints" / ".incomplete" / "step-12").is_dir()
    assert not (killed / "model.safetensors").exists()
    # a half-written newest checkpoint from a non-atomic writer (no trainer_state.json) is skipped too
    half = killed / "checkpoints" / "step-15"
    half.mkdir()
    shutil.copy(killed / "checkpoints" / "step-9" / "model.safetensors", half / "model.safetensors")
    assert latest_checkpoint(killed).name == "step-9"

    with pytest.warns(UserWarning, match=r"skipping incomplete checkpoint .*step-15"):
        _, state = train_tokenizer(_tokenizer_config(), prepared, _tokenizer_args(killed, resume=True))
    assert state.step == 12
    _assert_same_weights(straight, killed)
    assert _losses(killed) == _losses(straight)  # same losses, and steps 10-12 are not logged twice
    assert not (killed / "checkpoints" / ".incomplete" / "step-12").exists()


_KILL_LBM = """
import os, signal, sys
import neurorvq.lbm.training as lbm_training
from neurorvq.lbm import LBMConfig
from neurorvq.tokenizer.trainer import TrainingArguments

config_path, data, output = sys.argv[1:4]
calls = [0]
original = lbm_training.lbm_step
def lbm_step(model, batch):
    calls[0] += 1
    if calls[0] == 8:  # mid-epoch, two steps after the step-6 checkpoint (step 7 already logged)
        os.kill(os.getpid(), signal.SIGKILL)
    return original(model, batch)
lbm_training.lbm_step = lbm_step
lbm_training.train_lbm(LBMConfig.from_json_file(config_path), data, TrainingArguments(
    output_dir=output, max_steps=10, batch_size=2, warmup_steps=2, save_steps=3, eval_steps=100, logging_steps=1,
    progress=False, deterministic=True, seed=5, save_total_limit=5))
"""


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_kill_9_after_checkpoint_then_resume_is_bit_identical_lbm(prepared, tmp_path):
    from accelerate.state import AcceleratorState

    from neurorvq.lbm import LBMConfig
    from neurorvq.lbm.data import tokenize_dataset
    from neurorvq.lbm.training import train_lbm

    torch.manual_seed(0)
    tokenizer = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(TINY_TOKENIZER))).eval()
    tokenize_dataset(prepared, tokenizer, tmp_path / "codes")
    base = LBMConfig.from_json_file(str(TINY_LBM))
    config = LBMConfig.from_tokenizer_config(tokenizer.config, layout="depthwise", hidden_size=base.hidden_size,
                                             num_layers=base.num_layers, num_heads=base.num_heads,
                                             max_positions=base.max_positions, max_patches=base.max_patches,
                                             depth_hidden_size=base.depth_hidden_size, depth_layers=base.depth_layers,
                                             depth_heads=base.depth_heads, dropout=0.1)  # dropout: global RNG
    config_path = tmp_path / "lbm.json"
    config.to_json_file(str(config_path))
    args = dict(max_steps=10, batch_size=2, warmup_steps=2, save_steps=3, eval_steps=100, logging_steps=1,
                progress=False, deterministic=True, seed=5, save_total_limit=5)

    straight = tmp_path / "straight"
    train_lbm(LBMConfig.from_json_file(str(config_path)), tmp_path / "codes",
              TrainingArguments(output_dir=str(straight), **args))
    AcceleratorState._reset_state(reset_partial_state=True)

    killed = tmp_path / "killed"
    result = _run_killed(_KILL_LBM, config_path, tmp_path / "codes", killed)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert latest_checkpoint(killed).name == "step-6"
    assert [step for step, _ in _losses(killed)] == list(range(1, 8))  # died during step 8

    _, state = train_lbm(LBMConfig.from_json_file(str(config_path)), tmp_path / "codes",
                         TrainingArguments(output_dir=str(killed), resume=True, **args))
    assert state.step == 10
    _assert_same_weights(straight, killed)
    assert _losses(killed) == _losses(straight)


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_training_into_an_existing_run_is_refused(prepared, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"finished model")
    with pytest.raises(ValueError, match=r"already holds a training run .*--resume.*--overwrite"):
        train_tokenizer(_tokenizer_config(), prepared, _tokenizer_args(run, max_steps=1))
    assert (run / "model.safetensors").read_bytes() == b"finished model"  # untouched
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        train_tokenizer(_tokenizer_config(), prepared, _tokenizer_args(run, max_steps=1, resume=True))
    # --overwrite replaces the old run
    args = TrainingArguments(output_dir=str(run), max_steps=1, batch_size=2, save_steps=100, eval_steps=100,
                             progress=False, overwrite=True)
    train_tokenizer(_tokenizer_config(), prepared, args)
    assert (run / "model.safetensors").read_bytes() != b"finished model"


def test_cli_training_refusals_exit_2(prepared, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("{}\n")
    common = ["--data", prepared, "--output", run, "--max-steps", "1"]
    code, err = _cli(["train-tokenizer", "--config", TINY_TOKENIZER, *common], capsys)
    assert code == 2 and "already holds a training run" in err and "--resume" in err and err.count("\n") == 1
    code, err = _cli(["train-lbm", "--config", TINY_LBM, *common], capsys)
    assert code == 2 and "already holds a training run" in err
    code, err = _cli(["train-tokenizer", "--config", tmp_path / "nope.json", "--data", prepared,
                      "--output", tmp_path / "new"], capsys)
    assert code == 2 and "no such config file" in err and "nope.json" in err


# ====================================================================================================
# Outputs: never replaced without --overwrite, never the input, checked before the work
# ====================================================================================================


def test_reconstruct_refuses_to_write_over_its_input(eeg_dir, tmp_path, capsys):
    recording = tmp_path / "rec.edf"
    shutil.copy(eeg_dir / SHORT, recording)
    before = recording.read_bytes()
    code, err = _cli(["reconstruct", recording, "--out", recording, "--max-seconds", "2"], capsys)
    assert code == 2 and "is the input recording" in err and "choose another output file" in err
    code, err = _cli(["reconstruct", recording, "--out", recording, "--overwrite"], capsys)
    assert code == 2 and "is the input recording" in err  # not even with --overwrite
    assert recording.read_bytes() == before


@pytest.mark.parametrize("argv, words", [
    (["reconstruct", "REC", "--out", "x.edf", "--plot", "x.edf"], ["--out", "--plot", "are the same file"]),
    (["reconstruct", "REC", "--out", "x.edf", "--plot", "./sub/../x.edf"], ["--out", "--plot", "are the same file"]),
    (["reconstruct", "REC", "--out", "x.edf", "--plot", "x.edf.txt"], ["--plot", "must end in .png or .pdf or .svg"]),
    (["reconstruct", "REC", "--out", "x.png", "--plot", "x_plot.png"], ["--out", "must end in .edf"]),
    (["reconstruct", "REC", "--out", "REC"], ["--out", "is the input recording"]),
    (["generate", "--seconds", "1", "--out", "x.edf", "--plot", "x.edf"], ["--out", "--plot", "are the same file"]),
    (["generate", "--seconds", "1", "--out", "x.fif", "--prompt", "REC", "--plot", "REC"], ["is the input recording"]),
    (["evaluate-tokenizer", "nope", "--data", "nope", "--output", "m.json", "--figure", "m.json"],
     ["--output", "--figure", "are the same file"]),
    (["evaluate-tokenizer", "nope", "--data", "nope", "--output", "metrics.txt"], ["--output", "must end in .json"]),
    (["evaluate-lbm", "nope", "--codes", "nope", "--data", "nope", "--figure", "a.png", "--curve", "a.png"],
     ["--figure", "--curve", "are the same file"]),
])
def test_outputs_are_checked_against_each_other_and_the_inputs_before_any_work(argv, words, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    recording = tmp_path / "rec.edf"
    recording.write_bytes(b"never read: the outputs are checked first")
    code, err = _cli([str(recording) if a == "REC" else a for a in argv], capsys)
    assert code == 2 and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.edf", "sub"]  # nothing written


def test_python_output_paths_are_compared_as_files(tmp_path, monkeypatch):
    from neurorvq.pipelines._eeg import check_output_paths

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--out x.edf and --copy .*x.edf are the same file"):
        check_output_paths({"--out": ("x.edf", "recording"), "--copy": (tmp_path / "x.edf", "recording")})
    check_output_paths({"--out": ("x.edf", "recording"), "--plot": ("x.svg", "figure"), "--log": (None, "json")})


def test_generate_never_replaces_a_file_without_overwrite(tmp_path, capsys):
    out = tmp_path / "synth.edf"
    out.write_bytes(b"precious")
    code, err = _cli(["generate", "--seconds", "1", "--channels", "c3,c4", "--out", out], capsys)
    assert code == 2 and "exists: pass --overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == b"precious"
    assert _cli(["generate", "--seconds", "1", "--channels", "c3,c4", "--out", out, "--overwrite"], capsys)[0] == 0
    assert out.read_bytes()[:8] == b"0       "  # now an EDF


def test_python_save_raw_needs_overwrite(tmp_path):
    from neurorvq.pipelines._eeg import save_raw, to_raw

    path = tmp_path / "x_raw.fif"
    path.write_bytes(b"keep")
    raw = to_raw(np.random.default_rng(0).standard_normal((2, 400)), ["c3", "c4"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_raw(raw, path)
    assert path.read_bytes() == b"keep"
    save_raw(raw, path, overwrite=True)
    assert path.stat().st_size > 1000


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_fails_before_the_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = _cli(["generate", "--seconds", "1", "--channels", "c3", "--out", locked / "x.edf"], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "cannot write there" in err


def test_unwritable_output_check_without_root(tmp_path, monkeypatch):
    from neurorvq.pipelines import _eeg

    monkeypatch.setattr(_eeg.os, "access", lambda path, mode: False)  # a read-only folder, even for root
    with pytest.raises(PermissionError, match="cannot write there"):
        _eeg.check_output_path(tmp_path / "x.edf", suffixes=_eeg.RECORDING_OUTPUTS)


def test_prepare_refuses_a_folder_that_is_not_a_dataset(eeg_dir, tmp_path):
    folder = tmp_path / "my_recordings"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no dataset"):
        prepare_dataset([eeg_dir / SHORT], folder, progress=False)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


# ====================================================================================================
# Files: truncated EDF, misnamed EDF, annotation-only EDF
# ====================================================================================================


def _annotation_only_edf(path: Path, records: int = 2) -> None:
    def field(text, n):
        return text.ljust(n)[:n].encode("ascii")

    header = (field("0", 8) + field("X X X X", 80) + field("Startdate 01-JAN-2020 X X X", 80) + field("01.01.20", 8)
              + field("00.00.00", 8) + field("512", 8) + field("EDF+C", 44) + field(str(records), 8) + field("1", 8)
              + field("1", 4) + field("EDF Annotations", 16) + field("", 80) + field("", 8) + field("-1", 8)
              + field("1", 8) + field("-32768", 8) + field("32767", 8) + field("", 80) + field("30", 8) + field("", 32))
    data = b"".join(f"+{r}\x14\x14\x00".encode().ljust(60, b"\x00") for r in range(records))
    path.write_bytes(header + data)


def test_truncated_edf_warns_with_seconds_and_prepare_counts_it(eeg_dir, tmp_path):
    from neurorvq.tokenizer.feature_extraction_neurorvq import TruncatedRecordingWarning, read_recording

    data = (eeg_dir / SHORT).read_bytes()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    truncated = inputs / "half.edf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.warns(TruncatedRecordingWarning, match=r"half\.edf is truncated: read 30 s of the 62 s"):
        read_recording(truncated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = prepare_dataset([inputs], tmp_path / "out", validation_fraction=0.0, progress=False)
    assert [Path(p).name for p, _ in report.truncated] == ["half.edf"]


def test_edf_named_bdf_and_annotation_only_edf_get_clear_messages(eeg_dir, tmp_path, capsys):
    from neurorvq.tokenizer.feature_extraction_neurorvq import read_recording

    misnamed = tmp_path / "rec.bdf"
    shutil.copy(eeg_dir / SHORT, misnamed)
    with pytest.raises(ValueError, match=r"rec\.bdf is an EDF file with a \.bdf name: rename it to rec\.edf"):
        read_recording(misnamed)
    annotations = tmp_path / "events.edf"
    _annotation_only_edf(annotations)
    with pytest.raises(ValueError, match=r"events\.edf holds no signal channel \(an annotation-only file\?\)"):
        read_recording(annotations)
    code, err = _cli(["reconstruct", annotations], capsys)
    assert code == 2 and "holds no signal channel" in err


def test_prepare_with_the_default_on_error_skips_files_without_eeg_signal(eeg_dir, tmp_path):
    """An annotation-only EDF (a hypnogram: no signal channel at all) and a recording of only non-EEG channels are
    skipped and reported, with a warning naming the file, under the default on_error="raise" too; the EEG beside
    them is prepared. Unreadable files still raise."""
    import mne

    from neurorvq.tokenizer.feature_extraction_neurorvq import NoEEGSignalError, read_recording

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(eeg_dir / SHORT, inputs / "Subject02_2.edf")
    _annotation_only_edf(inputs / "SC4001EC-Hypnogram.edf")
    info = mne.create_info(["ECG", "Resp"], 200.0, ["ecg", "misc"])
    mne.io.RawArray(np.random.default_rng(0).normal(0, 1e-4, (2, 4000)), info, verbose="error").save(
        inputs / "physio_raw.fif", verbose="error")
    with pytest.raises(NoEEGSignalError, match="holds no signal channel"):  # a ValueError, as before
        read_recording(inputs / "SC4001EC-Hypnogram.edf")
    with pytest.warns(UserWarning) as caught:
        report = prepare_dataset([inputs], tmp_path / "out", validation_fraction=0.0, progress=False)
    skipped = {Path(p).name: reason for p, reason in report.skipped}
    assert skipped == {"SC4001EC-Hypnogram.edf": "no EEG channel", "physio_raw.fif": "no EEG channel"}
    messages = [str(w.message) for w in caught]
    for name in skipped:
        assert any(m.startswith("skipping ") and name in m for m in messages), name
    assert report.windows["train"] > 0 and report.subjects["train"] == ["inputs/Subject02"]
    (inputs / "broken.edf").write_bytes(b"0       " + b"garbage" * 10)  # unreadable: on_error="raise" raises
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"cannot prepare .*broken\.edf"):
            prepare_dataset([inputs], tmp_path / "out2", validation_fraction=0.0, progress=False)


# ====================================================================================================
# Units and signal quality
# ====================================================================================================


@pytest.fixture(scope="module")
def tiny_tokenizer() -> NeuroRVQTokenizer:
    torch.manual_seed(0)
    return NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(TINY_TOKENIZER))).eval()


def _eeg(channels=4, seconds=3, scale=20.0, seed=0) -> torch.Tensor:
    return torch.randn(1, channels, seconds * 200, generator=torch.Generator().manual_seed(seed)).cumsum(-1) * scale / 10


NAMES = ["fp1", "fp2", "c3", "c4"]


def test_volts_given_to_encode_raise_naming_the_unit(tiny_tokenizer):  # hook: _check_input
    with pytest.raises(ValueError, match=r"look like Volts, not microvolts.*multiply by 1e6"):
        tiny_tokenizer.encode(_eeg() * 1e-6, NAMES)


def test_flat_channels_warn_in_encode(tiny_tokenizer):  # hook: _check_input
    x = _eeg()
    x[0, 2] = 7.0
    with pytest.warns(UserWarning, match=r"flat \(constant\) channel\(s\) \['c3'\]"):
        tiny_tokenizer.encode(x, NAMES)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_encode_converts_other_float_dtypes(tiny_tokenizer, dtype):  # hook: _check_input
    x = _eeg().to(dtype)
    codes = tiny_tokenizer.encode(x, NAMES).codes
    assert torch.equal(codes, tiny_tokenizer.encode(x.float(), NAMES).codes)  # converted to float32 first


def test_decode_with_an_empty_time_axis_is_a_clear_error(tiny_tokenizer):  # hook: _check_codes
    codes = torch.zeros(1, tiny_tokenizer.config.num_scales, tiny_tokenizer.config.num_quantizers, 4, 0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"codes have an empty axis .*at least one window, one channel and one patch"):
        tiny_tokenizer.decode(codes, NAMES, log_amplitude_mean=torch.zeros(1), log_amplitude_std=torch.ones(1))


def test_feature_extractor_warns_about_flat_saturated_and_mixed_unit_channels():
    from neurorvq.tokenizer import NeuroRVQFeatureExtractor

    rng = np.random.default_rng(0)
    volts = rng.standard_normal((4, 4000)).cumsum(-1) * 1e-6
    volts[1] = 0.0  # flat
    volts[2] = np.clip(volts[2], -2e-6, 2e-6)  # amplifier saturation: flat tops
    volts[3] = rng.standard_normal(4000) * 20.0  # this channel is in microvolts among Volts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NeuroRVQFeatureExtractor()(volts, channel_names=["C3", "C4", "Cz", "Pz"], sampling_rate=200)
    messages = " | ".join(str(w.message) for w in caught)
    assert "flat (constant) channel(s) ['cz']" in messages or "flat (constant) channel(s) ['c4']" in messages
    assert "amplifier saturated" in messages and "'cz'" in messages
    assert "more than 1000x louder" in messages and "microvolts among Volts" in messages and "'pz'" in messages


def test_all_flat_recording_is_an_error_not_pcc_nan():
    from transformers import pipeline

    import neurorvq.pipelines  # noqa: F401

    rec = pipeline("eeg-reconstruction", model="neurorvq/tokenizer-small", device="cpu")
    with pytest.raises(ValueError, match="every channel of the recording is flat"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec(np.full((3, 1000), 5e-6), channel_names=["C3", "C4", "Cz"], sampling_rate=200)


# ====================================================================================================
# Channels: bipolar labels are mapped with a clear warning
# ====================================================================================================


def test_bipolar_labels_warn_that_they_are_not_referential():
    from neurorvq.tokenizer.channels import BipolarChannelWarning, map_channel_names

    with pytest.warns(BipolarChannelWarning, match=r"'Fp1-F7' -> 'fp1'.*'EEG Fpz-Cz' -> 'fpz'.*referential"):
        mapped, _ = map_channel_names(["Fp1-F7", "EEG Fpz-Cz", "C3-REF", "O1-M2"])
    assert mapped == ["fp1", "fpz", "c3", "o1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # referential labels with a reference suffix do not warn
        assert map_channel_names(["C3-REF", "O1-M2", "EEG Cz"])[0] == ["c3", "o1", "cz"]


# ====================================================================================================
# Models: bundled names offline, missing folders, wrong weights, damaged files
# ====================================================================================================


def test_bundled_names_resolve_offline_everywhere(monkeypatch):
    import time

    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    import neurorvq.pipelines  # noqa: F401  (installs the bundled-name resolution in transformers.pipeline)
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even with the Hub allowed, nothing may go there
    start = time.perf_counter()
    assert type(AutoModel.from_pretrained("neurorvq/tokenizer-small")).__name__ == "NeuroRVQTokenizer"
    assert AutoConfig.from_pretrained("neurorvq/lbm-small").model_type == "neurorvq-lbm-spatial"
    assert AutoConfig.from_pretrained("neurorvq/lbm-small-depthwise").model_type == "neurorvq-lbm"
    assert type(AutoFeatureExtractor.from_pretrained("neurorvq/tokenizer-small")).__name__ == "NeuroRVQFeatureExtractor"
    generator = transformers.pipeline("eeg-generation", model="neurorvq/lbm-small", device="cpu")
    assert generator(seconds=1, channel_names=["c3"], seed=0)["eeg"].shape == (1, 200)
    assert time.perf_counter() - start < 20  # no Hub retries


def test_transformers_patch_is_visible_and_can_be_turned_off():
    import transformers

    from neurorvq.tokenizer import loading

    assert loading.bundled_name_resolution_installed()  # importing neurorvq installed it (NEURORVQ_NO_PATCH unset)
    loading.uninstall_bundled_name_resolution()
    try:
        assert not loading.bundled_name_resolution_installed()
        for cls in (transformers.AutoConfig, transformers.AutoModel, transformers.AutoModelForCausalLM,
                    transformers.AutoFeatureExtractor):
            assert not getattr(cls.from_pretrained, "_neurorvq_bundled", False)
        assert not getattr(transformers.pipeline, "_neurorvq_bundled", False)
        assert type(NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small")).__name__ == "NeuroRVQTokenizer"
    finally:
        loading.install_bundled_name_resolution()
    assert getattr(transformers.AutoModel.from_pretrained, "_neurorvq_bundled", False)
    # NEURORVQ_NO_PATCH=1: importing neurorvq leaves transformers as it was; our from_pretrained still knows the names
    code = textwrap.dedent("""
        import transformers
        import neurorvq.pipelines
        from neurorvq.tokenizer import NeuroRVQTokenizer, loading
        assert not loading.bundled_name_resolution_installed()
        assert not getattr(transformers.AutoModel.from_pretrained, "_neurorvq_bundled", False)
        assert not getattr(transformers.pipeline, "_neurorvq_bundled", False)
        NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small")
        print("untouched")
    """)
    env = {**os.environ, "NEURORVQ_NO_PATCH": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "untouched" in out.stdout, out.stderr[-2000:]


def test_packages_register_their_bundled_models():
    from neurorvq.lbm.modeling_lbm import BUNDLED_MODELS as LBMS
    from neurorvq.tokenizer.loading import BUNDLED, register_bundled
    from neurorvq.tokenizer.modeling_neurorvq import BUNDLED_MODELS as TOKENIZERS

    assert {**TOKENIZERS, **LBMS} == BUNDLED and set(BUNDLED) == {"neurorvq/tokenizer-small", "neurorvq/lbm-small",
                                                                      "neurorvq/lbm-small-depthwise"}
    assert register_bundled("neurorvq/tokenizer-small", TOKENIZERS["neurorvq/tokenizer-small"])  # same: a no-op
    with pytest.raises(ValueError, match="already names"):
        register_bundled("neurorvq/tokenizer-small", REPO_ROOT)
    with pytest.raises(ValueError, match="neurorvq/NAME"):
        register_bundled("someone/model", REPO_ROOT)


@pytest.mark.parametrize("name, words", [("runs_that_do_not_exist/tok/", "no such folder"),
                                         ("./missing-model", "no such folder"),
                                         ("neurorvq/tokenizer-smal", "unknown bundled model")])
def test_missing_model_folder_says_so_at_once(name, words):  # the message needs the hook in from_pretrained
    from neurorvq.tokenizer.loading import load_model

    with pytest.raises(FileNotFoundError, match=words):
        load_model(NeuroRVQTokenizer, name)
    with pytest.raises(FileNotFoundError, match=words):
        NeuroRVQTokenizer.from_pretrained(name)  # hook: NeuroRVQTokenizer.from_pretrained


def test_cli_missing_model_and_bad_device_exit_2(tmp_path, capsys):
    code, err = _cli(["generate", "--seconds", "1", "--out", tmp_path / "a.edf", "--model", tmp_path / "nope"], capsys)
    assert code == 2 and "no such folder" in err
    code, err = _cli(["generate", "--seconds", "1", "--out", tmp_path / "a.edf", "--device", "gpu7"], capsys)
    assert code == 2 and "not a torch device" in err
    if not torch.cuda.is_available():
        code, err = _cli(["generate", "--seconds", "1", "--out", tmp_path / "a.edf", "--device", "cuda"], capsys)
        assert code == 2 and "CUDA is not available" in err and "--device cpu" in err
    assert not (tmp_path / "a.edf").exists()


@pytest.fixture()
def tokenizer_folder(tmp_path, tiny_tokenizer) -> Path:
    folder = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_lbm_weights_in_a_tokenizer_folder_raise(tokenizer_folder):
    from neurorvq.lbm import LBMForCausalLM
    from neurorvq.lbm.modeling_lbm import BUNDLED_MODELS
    from neurorvq.tokenizer.loading import load_model

    with pytest.raises(ValueError, match=r"holds a NeuroRVQ tokenizer \(load it with NeuroRVQTokenizer\)"):
        load_model(LBMForCausalLM, tokenizer_folder)
    shutil.copy(BUNDLED_MODELS["neurorvq/lbm-small"] / "model.safetensors", tokenizer_folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"do not match its config: .*missing.*unexpected"):
        load_model(NeuroRVQTokenizer, tokenizer_folder)
    with pytest.raises(ValueError, match=r"do not match its config"):
        NeuroRVQTokenizer.from_pretrained(tokenizer_folder)  # hook: NeuroRVQTokenizer.from_pretrained


def test_config_that_disagrees_with_its_weights_raises(tokenizer_folder):
    from neurorvq.tokenizer.loading import load_model

    config = json.loads((tokenizer_folder / "config.json").read_text())
    config["num_quantizers"] = 2  # the weights hold 4 stages per scale: two would be dropped silently
    (tokenizer_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected \(quantizers\.0\.stages\.2"):
        load_model(NeuroRVQTokenizer, tokenizer_folder)


def test_truncated_weights_file_is_named(tokenizer_folder, capsys):
    from neurorvq.tokenizer.loading import load_model

    weights = tokenizer_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"the weights file .*tok/model\.safetensors is damaged \(truncated"):
        load_model(NeuroRVQTokenizer, tokenizer_folder)
    code, err = _cli(["reconstruct", REPO_ROOT / "README.md", "--tokenizer", tokenizer_folder], capsys)
    assert code == 2


def test_cli_bad_checkpoint_exit_2(prepared, tmp_path, capsys):
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "step-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 3, "epoch": 0, "batch_in_epoch": 3,
                                                               "history": []}))
    (checkpoint / "model.safetensors").write_bytes(b"garbage")
    code, err = _cli(["train-tokenizer", "--config", TINY_TOKENIZER, "--data", prepared, "--output", run,
                      "--max-steps", "4", "--resume"], capsys)
    assert code == 2 and "cannot resume from" in err and "step-3" in err and "delete this checkpoint folder" in err


# ====================================================================================================
# Sampling controls
# ====================================================================================================


@pytest.fixture(scope="module")
def generator():
    from transformers import pipeline

    import neurorvq.pipelines  # noqa: F401

    return pipeline("eeg-generation", model="neurorvq/lbm-small", device="cpu")


@pytest.mark.parametrize("kwargs, words", [
    ({"temperature": float("inf")}, "temperature must be finite"),
    ({"temperature": float("nan")}, "temperature must be finite"),
    ({"temperature": -1.0}, "temperature must be finite and >= 0"),
    ({"temperature": 1e6}, "temperature 1e\\+06 is absurd"),
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
    ({"top_k": 0}, "top_k must be an integer >= 1"),
    ({"top_k": 2.5}, "top_k must be an integer >= 1"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"seed": "0"}, "seed must be an integer"),
    ({"num_samples": 0}, "num_samples must be an integer >= 1"),
])
def test_bad_sampling_controls_raise(generator, kwargs, words):
    with pytest.raises(ValueError, match=words):
        generator(seconds=1, channel_names=["c3"], **kwargs)


def test_high_temperature_warns_and_numpy_or_huge_seeds_work(generator):
    with pytest.warns(UserWarning, match="far above 1"):
        generator(seconds=1, channel_names=["c3"], seed=0, temperature=5.0)
    a = generator(seconds=1, channel_names=["c3"], seed=np.int64(2), num_samples=np.int64(1), top_k=np.int32(50))
    b = generator(seconds=1, channel_names=["c3"], seed=2, top_k=50)
    np.testing.assert_array_equal(a["eeg"], b["eeg"])
    huge = generator(seconds=1, channel_names=["c3"], seed=2**80 + 2)
    assert np.isfinite(huge["eeg"]).all()


def test_lbm_generate_validates_controls_directly():  # hook: LBMForCausalLM.generate
    from neurorvq.lbm import LBMForCausalLM

    lbm = LBMForCausalLM.from_pretrained("neurorvq/lbm-small-depthwise").eval()
    with pytest.raises(ValueError, match="temperature must be finite"):
        lbm.generate(["c3"], num_patches=1, temperature=float("inf"))
