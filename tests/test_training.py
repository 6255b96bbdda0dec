"""Data preparation, the Accelerate training core (exact resume, 2-process codebook sync) and quantizer kinds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer
from neurorvq.tokenizer.data import (
    ShapeBucketBatchSampler,
    collate_windows,
    load_prepared,
    prepare_dataset,
    window_shapes,
)
from neurorvq.tokenizer.trainer import TrainingArguments
from neurorvq.tokenizer.training import train_tokenizer

from .conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

TINY = REPO_ROOT / "configs" / "tokenizer" / "tiny.json"
FILES = ["eegmat/Subject02_2.edf", "eegmat/Subject03_2.edf", "eegmat/Subject04_2.edf", "eegmmidb/S001/S001R01.edf"]


@pytest.fixture(scope="module")
def prepared(eeg_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("prepared")
    report = prepare_dataset([eeg_dir / f for f in FILES], output, validation_fraction=0.25, progress=False)
    assert not report.reused_cache
    return output


def test_prepare_splits_by_subject_and_keeps_every_sample(prepared, eeg_dir):
    import mne

    train, validation = load_prepared(prepared, "train"), load_prepared(prepared, "validation")
    assert len(train) > 0 and len(validation) > 0
    assert not set(train["subject_id"]) & set(validation["subject_id"])  # never split within a subject
    assert set(train["subject_id"]) | set(validation["subject_id"]) == {
        "eegmat/Subject02", "eegmat/Subject03", "eegmat/Subject04", "eegmmidb/S001"}
    row = train[0]
    assert row["input_values"].dtype.name == "float32" and row["input_values"].ndim == 2
    assert len(row["channel_names"]) == row["input_values"].shape[0]
    # all real samples of a recording are kept: sum of valid samples == duration x 200 Hz
    both = [*train, *validation]
    for name in FILES:
        path = str(eeg_dir / name)
        raw = mne.io.read_raw(path, preload=False, verbose="error")
        kept = sum(int(r["valid_samples"]) for r in both if r["recording_id"] == path)
        assert kept == int(raw.n_times / raw.info["sfreq"] * 200)
        assert {float(r["source_sampling_rate"]) for r in both if r["recording_id"] == path} == {raw.info["sfreq"]}


def test_prepare_reuses_cache_and_rebuilds_when_inputs_change(prepared, eeg_dir, tmp_path):
    again = prepare_dataset([eeg_dir / f for f in FILES], prepared, validation_fraction=0.25, progress=False)
    assert again.reused_cache
    changed = prepare_dataset([eeg_dir / f for f in FILES[:2]], prepared, validation_fraction=0.25, progress=False)
    assert not changed.reused_cache
    assert set(load_prepared(prepared, "train")["recording_id"]) | set(load_prepared(prepared, "validation")["recording_id"]) \
        == {str(eeg_dir / f) for f in FILES[:2]}
    # restore the module fixture's content for the other tests
    prepare_dataset([eeg_dir / f for f in FILES], prepared, validation_fraction=0.25, progress=False)


def test_prepare_corrupt_file_raises_or_is_skipped(eeg_dir, tmp_path):
    corrupt = tmp_path / "inputs" / "broken.edf"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"0       this is not an EDF file" * 10)
    shutil.copy(eeg_dir / FILES[0], tmp_path / "inputs" / "good.edf")
    with pytest.raises(ValueError, match="broken.edf"):
        prepare_dataset([tmp_path / "inputs"], tmp_path / "out", validation_fraction=0.0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = prepare_dataset([tmp_path / "inputs"], tmp_path / "out", validation_fraction=0.0, on_error="skip",
                                 progress=False)
    assert [Path(p).name for p, _ in report.skipped] == ["broken.edf"]
    assert report.windows["train"] > 0


def test_bucket_sampler_batches_equal_shapes_reproducibly(prepared):
    train = load_prepared(prepared, "train")
    shapes = window_shapes(train)
    sampler = ShapeBucketBatchSampler(shapes, batch_size=3, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(train)))
    for batch in batches:
        assert len({shapes[i] for i in batch}) == 1
        collated = collate_windows([train[i] for i in batch])
        assert collated["input_values"].shape == (len(batch), *shapes[batch[0]])
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def _args(output, **kw):
    return TrainingArguments(output_dir=str(output), max_steps=6, batch_size=4, warmup_steps=2, save_steps=3,
                             eval_steps=3, logging_steps=1, progress=False, deterministic=True, **kw)


def test_training_resumes_exactly_from_a_saved_state(prepared, tmp_path):
    config = NeuroRVQConfig.from_json_file(str(TINY))
    config.quantizer_type, config.dead_code_threshold = "standard", 0.5
    model, state = train_tokenizer(config, prepared, _args(tmp_path))
    assert state.step == 6
    straight = load_file(str(tmp_path / "model.safetensors"))
    losses = [r["loss"] for r in state.history if "loss" in r]
    # pretend the run died after step 3: drop the last checkpoint and resume
    shutil.rmtree(tmp_path / "checkpoints" / "step-6")
    (tmp_path / "model.safetensors").unlink()
    _, resumed_state = train_tokenizer(config, prepared, _args(tmp_path, resume=True))
    resumed = load_file(str(tmp_path / "model.safetensors"))
    assert resumed_state.step == 6
    assert set(resumed) == set(straight)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    assert [r["loss"] for r in resumed_state.history if "loss" in r] == losses


def test_two_processes_keep_codebooks_identical(prepared, tmp_path):
    # two CPU processes over gloo (torchrun; Accelerate picks MULTI_CPU from ACCELERATE_USE_CPU)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", ACCELERATE_USE_CPU="true")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               str(REPO_ROOT / "tests" / "scripts" / "ddp_codebook_sync.py"), str(TINY), str(prepared), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    codebook_keys = [k for k in rank0 if ".stages." in k]
    assert codebook_keys
    assert set(rank0) == set(rank1)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # the codebooks were initialised and trained
    untrained = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(TINY)))
    assert bool(rank0["quantizers.0.stages.0.initialized"].item())
    assert not torch.equal(rank0["quantizers.0.stages.0.codebook"], untrained.quantizers[0].stages[0].codebook)


def test_scale_tokens_decode_from_codes_alone():
    torch.manual_seed(0)
    config = NeuroRVQConfig.from_json_file(str(TINY))
    config.amplitude_side_information, config.quantizer_type = "scale_tokens", "standard"
    model = NeuroRVQTokenizer(config).train()
    names = ["fp1", "fp2", "c3", "c4"]
    x = torch.randn(2, 4, 600).cumsum(-1)
    x[1] *= 10  # a louder window: its scale tokens must say so
    output = model(x, names)
    assert output.scale_codes.shape == (2, 2, 4, 3)
    model.eval()
    encoded = model.encode(x, names)
    assert torch.equal(encoded.scale_codes, output.scale_codes)
    assert (encoded.scale_codes[1, 0] > encoded.scale_codes[0, 0]).all()  # log-amplitude mean grew
    decoded = model.decode(encoded.codes, names, scale_codes=encoded.scale_codes)
    assert decoded.shape == x.shape and torch.isfinite(decoded).all()
    with pytest.raises(ValueError, match="scale_codes"):
        model.decode(encoded.codes, names)
    # the dequantised per-patch statistics are within half a grid step of the exact ones
    spectrum = torch.fft.fft(x.reshape(2, 4, 3, 200), dim=-1).abs().log1p()
    step = (config.scale_mean_range[1] - config.scale_mean_range[0]) / (config.num_scale_tokens - 1)
    assert (encoded.log_amplitude_mean - spectrum.mean(-1)).abs().max() <= step / 2 + 1e-5


def test_dead_codes_are_restarted():
    torch.manual_seed(0)
    config = NeuroRVQConfig.from_json_file(str(TINY))
    config.quantizer_type, config.dead_code_threshold = "standard", 1e6  # every code counts as dead
    model = NeuroRVQTokenizer(config).train()
    names = ["fp1", "fp2", "c3", "c4"]
    model(torch.randn(2, 4, 600).cumsum(-1), names)
    stage = model.quantizers[0].stages[0]
    before = stage.codebook.clone()
    model(torch.randn(2, 4, 600).cumsum(-1), names)
    assert stage.restarted == config.codebook_size
    assert not torch.equal(before, stage.codebook)


def test_bf16_mixed_precision_keeps_the_quantizer_in_fp32(prepared, tmp_path):
    config = NeuroRVQConfig.from_json_file(str(TINY))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, batch_size=2, warmup_steps=1, save_steps=10,
                             eval_steps=10, logging_steps=1, progress=False, mixed_precision="bf16",
                             gradient_accumulation_steps=2)
    model, state = train_tokenizer(config, prepared, args)
    losses = [r["loss"] for r in state.history if "loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert (state.step, state.epoch, state.batch_in_epoch) == (2, 0, 4)  # 2 micro-batches per optimizer step
    stage = model.quantizers[0].stages[0]
    assert stage.codebook.dtype == torch.float32 and bool(stage.initialized.item())
    assert torch.isfinite(stage.codebook).all()
