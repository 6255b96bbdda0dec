"""Evaluate an LBM beyond its own likelihood: its code NLL beside the count models, the realism of its samples and
whether a continuation stays the recording of its prompt.

`evaluate_lbm` runs all three (signals are `[C, T]` arrays in microvolts at 200 Hz):

- code NLL of the model (`lbm.training.validation_nll`) beside the count models of `lbm.count_models`, in bits per
  code and per position;
- `realism_of_samples`: the samples (`sample_eeg`, grouped by draw) against the validation windows of the montage
  (grouped by subject) through `lbm.realism.realism_report` (two-sample tests with grouped folds, each figure beside
  its real-vs-real floor; see its docstring for how to read the numbers);
- `prompt_specificity`: continuations of real prompts, closest to their own prompt or not, and the join ratio.

`format_nll` / `format_realism` write the tables; the figures are `lbm.evaluation_plots`'. The count models, the
pooled realism summary (`lbm.realism_pooled`) and the figures used to live here and can still be imported from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..tokenizer.channels import STANDARD_1020
from ..tokenizer.configuration_neurorvq import SAMPLING_RATE
from ..tokenizer.metrics import BANDS
from .count_models import COUNT_MODELS, count_baselines
from .evaluation_plots import plot_realism
from .realism import CLASSIFIERS, prepared_set
from .realism import realism_report as two_sample_realism_report
from .realism_metrics import band_powers
from .realism_pooled import pooled_realism
from .sampling import decode_generated, decoding_noise, generation_kwargs

# re-exported: names importable from here before the count models, the pooled summary and the figures moved out
from ..tokenizer.metrics import BLOCK_SIZE, seam_ratio  # noqa: E402, F401
from .count_models import bigram_nll, row_streams, unigram_nll  # noqa: E402, F401
from .evaluation_plots import plot_learning_curve  # noqa: E402, F401
from .layout import codes_to_positions  # noqa: E402, F401
from .realism import format_report  # noqa: E402, F401
from .realism_classifiers import two_sample_test  # noqa: E402, F401
from .realism_data import as_signal, cut_windows  # noqa: E402, F401
from .realism_metrics import POWER_FLOOR, mean_abs_correlation, spectral_slope, welch_psd  # noqa: E402, F401
from .realism_pooled import SEGMENT_SECONDS, format_realism  # noqa: E402, F401

JOIN_JUMP = 3.0  # a join ratio above this is a visible jump where a continuation starts

realism_report = pooled_realism  # the benchmarks' name for the pooled summary; the two-sample report is lbm.realism's


@torch.no_grad()
def sample_eeg(model, tokenizer, channel_names: Sequence[str], seconds: int, num_samples: int, seed: int = 0,
               temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
               **sampling) -> list[np.ndarray]:
    """`num_samples` synthetic recordings [C, seconds * 200] in microvolts: LBM codes (sampled as one batch)
    decoded by the tokenizer. Sampling options left None are the model's defaults (`sampling.generation_kwargs`)."""
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(list(channel_names), num_patches=seconds, generator=generator, batch_size=num_samples,
                         **generation_kwargs(model, temperature=temperature, top_k=top_k, top_p=top_p, **sampling))
    eeg = decode_generated(tokenizer, out, channel_names, generator, noise_filling=decoding_noise(model))
    return list(eeg.cpu().numpy())


def _window_signal(row: dict) -> np.ndarray:
    return np.asarray(row["input_values"], dtype=np.float32)[:, : int(row["valid_samples"])]


@torch.no_grad()
def prompt_specificity(model, tokenizer, rows: Sequence[dict], prompt_seconds: int = 4, seconds: int = 4,
                       seed: int = 0, temperature: float | None = None, top_p: float | None = None) -> dict:
    """Does a continuation stay the same recording? One prompt per recording (the first `prompt_seconds` of its
    first window long enough), continued for `seconds`, within groups of recordings that share a montage.

    Profile = log band powers per channel (dB, `band_powers`); distance = mean |difference| between the profile
    of a continuation and that of a prompt. Returns `specificity` (over prompts, the mean share of other prompts
    that are farther from the continuation than its own prompt: 0.5 = chance, 1 = always closest to its own),
    `top1` (share of continuations whose own prompt is the closest of all; chance 1 / number of prompts),
    `join_ratio` (median over prompts of the squared step across the prompt/continuation join over the median
    squared step within the continuation: 1 = no jump), `join_jumps` (share of continuations whose join ratio exceeds
    `JOIN_JUMP`: the tail the median hides) and `num_prompts`.
    """
    needed = (prompt_seconds + seconds) * SAMPLING_RATE
    by_montage: dict[tuple, dict[str, np.ndarray]] = {}
    for row in rows:
        x = _window_signal(row)
        names = tuple(row["channel_names"])
        recordings = by_montage.setdefault(names, {})
        if x.shape[-1] >= needed and row["recording_id"] not in recordings:
            recordings[row["recording_id"]] = x[:, :needed]
    generator = torch.Generator().manual_seed(seed)
    closer, top1, joins = [], [], []
    split = prompt_seconds * SAMPLING_RATE
    for names, recordings in by_montage.items():
        if len(recordings) < 2:
            continue
        signals = np.stack(list(recordings.values()))  # [R, C, T]
        # one second more than the prompt is encoded and dropped: a lapped (mdct) frame at the end of an encoded
        # signal is windowed as an end frame, which a continuation would not match
        encoded = tokenizer.encode(torch.from_numpy(signals[..., :split + SAMPLING_RATE]), list(names))
        out = model.generate(list(names), num_patches=seconds, prompt_codes=encoded.codes[..., :prompt_seconds],
                             prompt_scale_codes=encoded.scale_codes[..., :prompt_seconds], generator=generator,
                             **generation_kwargs(model, temperature=temperature, top_p=top_p))
        eeg = decode_generated(tokenizer, out, names, generator, prompt_seconds, decoding_noise(model)).numpy()
        prompts = [band_powers(x[:, :split]) for x in signals]
        for i, x in enumerate(eeg):
            continuation = band_powers(x[:, split:])
            distances = np.array([np.abs(continuation - prompt).mean() for prompt in prompts])
            closer.append(float((distances[i] < np.delete(distances, i)).mean()))
            top1.append(int(distances.argmin()) == i)
            steps = np.diff(x, axis=-1) ** 2
            joins.append(float(np.median(steps[:, split - 1]) / np.median(steps[:, split:])))
    if not closer:
        return {"specificity": float("nan"), "top1": float("nan"), "join_ratio": float("nan"), "join_jumps": float("nan"),
                "num_prompts": 0}
    return {"specificity": float(np.mean(closer)), "top1": float(np.mean(top1)),
            "join_ratio": float(np.median(joins)), "join_jumps": float(np.mean(np.asarray(joins) > JOIN_JUMP)),
            "num_prompts": len(closer)}


def realism_of_samples(synthetic: Sequence[np.ndarray], validation_rows, channel_names: Sequence[str],
                       train_rows=None, seed: int = 0, classifiers: Sequence[str] = CLASSIFIERS,
                       repeats: int = 3) -> dict:
    """`lbm.realism.realism_report` of synthetic samples (`[C, T]` µV at 200 Hz in `channel_names` order, each its
    own draw) against the prepared validation windows that have every channel of `channel_names` (grouped by
    `subject_id`). The floor: training windows of other subjects when `train_rows` is given (and holds at least two
    such subjects), else half of the validation subjects against the other half. A report that cannot be made
    (no window of the montage, too few subjects) is `{"error": reason}`."""
    try:
        reference = prepared_set(validation_rows, channel_names)
        if not len(reference):
            raise ValueError(f"no validation window has every channel of the montage {list(channel_names)}")
        other = None
        if train_rows is not None:
            other = prepared_set(train_rows, channel_names, exclude_groups=reference.groups)
            other = other if len(set(other.groups)) >= 2 else None
        return two_sample_realism_report(
            synthetic, reference.signals, reference.channel_names, SAMPLING_RATE, real_groups=reference.groups,
            other_real=other.signals if other else None, other_real_groups=other.groups if other else None,
            repeats=repeats, seed=seed, classifiers=classifiers)
    except ValueError as error:
        return {"error": str(error)}


def evaluate_lbm(model, tokenizer, train_codes, validation_codes, validation_rows: Sequence[dict],
                 num_samples: int = 32, seconds: int = 8, channel_names: Sequence[str] = STANDARD_1020,
                 seed: int = 0, temperature: float | None = None, top_p: float | None = None,
                 figure: str | Path | None = None, train_rows=None, realism_classifiers: Sequence[str] = CLASSIFIERS,
                 realism_repeats: int = 3) -> dict:
    """Validation NLL against the count models, realism of samples, and prompt specificity.

    `train_codes` / `validation_codes`: code datasets (`load_codes`); `validation_rows`: the prepared validation
    windows they came from (real EEG in µV, with `channel_names`, `subject_id` and `recording_id`). Samples use
    the montage `channel_names` (any model whose `generate(channel_names, num_patches=, batch_size=, generator=,
    temperature=)` returns codes the tokenizer decodes; sampling options left None are the model's defaults) and `results["realism"]` is [`realism_of_samples`]: the
    `lbm.realism` report against the validation windows of that montage, its floor from `train_rows` (prepared
    training windows, optional) of other subjects or else from half of the validation subjects against the other
    half. Returns a JSON-serialisable dict; writes the realism figure when `figure` is given.
    """
    from .training import validation_nll

    sizes = model.config.code_layout.stream_vocab_sizes
    results = {"lbm": validation_nll(model.eval(), validation_codes)}  # unconditional, like the count models
    if model.config.condition_names:  # each window given its own label
        results["lbm_conditional"] = validation_nll(model, validation_codes, conditional=True)
    for name, baseline in count_baselines(train_codes, validation_codes, sizes).items():
        results[name] = {k: v for k, v in baseline.items() if k in ("bits_per_code", "bits_per_position", "weights")}
    rows = list(validation_rows)
    synthetic = sample_eeg(model, tokenizer, channel_names, seconds, num_samples, seed, temperature, top_p=top_p)
    results["realism"] = realism_of_samples(synthetic, rows, channel_names, train_rows, seed, realism_classifiers,
                                            realism_repeats)
    results["samples"] = {"num_samples": num_samples, "seconds": seconds, "channels": list(channel_names),
                          "temperature": temperature, "top_p": top_p}
    results["prompt"] = prompt_specificity(model, tokenizer, rows, seed=seed, temperature=temperature, top_p=top_p)
    if figure is not None:
        real = prepared_set(rows, channel_names).signals or [_window_signal(r) for r in rows]
        results["figure"] = str(plot_realism(synthetic, real, figure, channel_names=list(channel_names)))
    return results


def format_nll(results: dict) -> str:
    """Markdown table: validation bits per position of the LBM and the count models, and gains over unigram."""
    unigram = results["unigram"]["bits_per_position"]
    lines = ["| model | bits/code | bits/position | gain over unigram (bits/position) |", "|---|---|---|---|"]
    for name in ("lbm", *COUNT_MODELS):
        row = results[name]
        lines.append(f"| {name} | {row['bits_per_code']:.3f} | {row['bits_per_position']:.2f} "
                     f"| {unigram - row['bits_per_position']:+.2f} |")
    if "prompt" in results:
        p = results["prompt"]
        jumps = f"; joins > {JOIN_JUMP:g}x: {p['join_jumps']:.2f}" if "join_jumps" in p else ""
        lines.append(f"\nprompt specificity {p['specificity']:.2f} (closest of all: {p['top1']:.2f}; "
                     f"join ratio {p['join_ratio']:.2f}{jumps}; {p['num_prompts']} prompts)")
    return "\n".join(lines)


__all__ = [
    "BANDS",
    "band_powers",
    "bigram_nll",
    "count_baselines",
    "evaluate_lbm",
    "format_realism",
    "mean_abs_correlation",
    "plot_realism",
    "pooled_realism",
    "realism_of_samples",
    "realism_report",
    "row_streams",
    "spectral_slope",
    "unigram_nll",
    "welch_psd",
]
