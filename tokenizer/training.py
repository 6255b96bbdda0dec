"""The tokenizer's training: a [`NeuroRVQTokenizer`] on a prepared dataset, through the shared trainer.

`train_tokenizer` builds (or loads) the model, fits an mdct design's codebooks by k-means before any gradient
step and its noise-filling levels after the last, and runs `trainer.train` with the tokenizer's step function
(`tokenizer_step`), log metrics (`tokenizer_metrics`: loss terms, codebook usage and perplexity) and validation
(`validation_loss`). The model-agnostic Accelerate trainer itself is in `trainer.py` (the LBM uses it too).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

# The shared trainer; its public names are also re-exported from here, where they lived before `trainer.py`
# (old imports keep working; new code imports `neurorvq.tokenizer.trainer`).
from .trainer import (  # noqa: F401
    CHECKPOINT_COMPLETE,
    RUN_FILES,
    TrainerState,
    TrainingArguments,
    build_model,
    check_output_dir,
    existing_run_files,
    latest_checkpoint,
    list_checkpoints,
    train,
)


def tokenizer_step(model, batch):
    """One forward pass on a collated batch (`collate_windows`); the output's `.loss` is what is trained."""
    return model(batch["input_values"], batch["channel_names"], padding_mask=batch["padding_mask"])


def tokenizer_metrics(output) -> dict:
    """Loss terms and, per (scale, stage), codebook usage and perplexity of this batch."""
    record = {name: float(getattr(output, name).detach()) for name in
              ("quantizer_loss", "amplitude_loss", "phase_loss", "time_loss", "difference_loss")
              if getattr(output, name) is not None}
    usage, perplexity = output.codebook_usage.detach().cpu(), output.codebook_perplexity.detach().cpu()
    for s in range(usage.shape[0]):
        for k in range(usage.shape[1]):
            record[f"usage/s{s}k{k}"] = round(float(usage[s, k]), 4)
            record[f"perplexity/s{s}k{k}"] = round(float(perplexity[s, k]), 2)
    return record


@torch.no_grad()
def validation_loss(model, dataset, batch_size: int = 16, max_batches: int | None = None) -> dict:
    """Mean loss terms of `model` (eval mode, codebooks frozen) over a prepared split."""
    from .data import ShapeBucketBatchSampler, collate_windows, window_shapes

    sampler = ShapeBucketBatchSampler(window_shapes(dataset), batch_size, shuffle=False)
    totals, windows = {}, 0
    for i, indices in enumerate(sampler):
        if max_batches is not None and i >= max_batches:
            break
        batch = collate_windows([dataset[j] for j in indices])
        output = model(batch["input_values"].to(model.device), batch["channel_names"],
                       padding_mask=batch["padding_mask"].to(model.device))
        for name in ("loss", "quantizer_loss", "amplitude_loss", "phase_loss", "time_loss", "difference_loss"):
            if getattr(output, name) is not None:  # the mdct design has no spectrum or quantizer terms
                totals[name] = totals.get(name, 0.0) + float(getattr(output, name)) * len(indices)
        windows += len(indices)
    return {name: value / max(windows, 1) for name, value in totals.items()}


def train_tokenizer(config, data_dir: str | Path, args: TrainingArguments, init_from: str | Path | None = None,
                    eval_batches: int | None = 8):
    """Train a [`NeuroRVQTokenizer`] on a prepared dataset (`neurorvq prepare`); returns (model, state)."""
    from .data import ShapeBucketBatchSampler, collate_windows, load_prepared, window_shapes
    from .modeling_neurorvq import NeuroRVQTokenizer

    check_output_dir(args)  # before loading anything
    train_set = load_prepared(data_dir, "train")
    validation_set = load_prepared(data_dir, "validation")
    if len(train_set) == 0:
        raise ValueError(f"{data_dir} has no training window")
    model = build_model(NeuroRVQTokenizer, config, init_from, args.seed)
    if config is not None and init_from is not None and model.config.token_design == "mdct":
        # a fitted mdct tokenizer + a config that adds (or changes) its refiner: keep the fitted codebooks
        fitted = model
        model = build_model(NeuroRVQTokenizer, config, None, args.seed)
        model.quantizers.load_state_dict(fitted.quantizers.state_dict())
    if model.config.token_design == "mdct":
        if init_from is None:  # the codebooks come from k-means, not from gradient steps
            from .codebook_fitting import fit_mdct_codebooks, mdct_training_vectors

            windows = ((row["input_values"], row["valid_samples"]) for row in train_set)
            vectors = mdct_training_vectors(model, windows, args.kmeans_vectors, args.seed)
            errors = fit_mdct_codebooks(model, vectors, model.config.kmeans_iters, args.seed)
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.output_dir) / "codebook_fit.json").write_text(json.dumps(
                {"vectors": len(vectors), "num_iters": model.config.kmeans_iters,
                 "residual_mse_per_band_and_stage": errors}, indent=1))
        if not any(p.requires_grad for p in model.parameters()):  # no learned decoder: nothing to train
            _fit_noise_filling(model, train_set, args)
            model.save_pretrained(args.output_dir)
            _save_feature_extractor(model.config, args.output_dir)
            return model, TrainerState()
    sampler = ShapeBucketBatchSampler(window_shapes(train_set), args.batch_size, shuffle=True, seed=args.seed)
    # its own generator: creating an iterator must not draw from the global RNG (exact resume)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_windows,
                                         num_workers=args.num_workers,
                                         generator=torch.Generator().manual_seed(args.seed))
    eval_fn = None
    if len(validation_set):
        eval_fn = lambda m: validation_loss(m, validation_set, args.batch_size, eval_batches)  # noqa: E731
    tokens = lambda batch: int(batch["input_values"].shape[0] * batch["input_values"].shape[1]  # noqa: E731
                               * batch["input_values"].shape[2] // model.config.patch_size)
    state = train(model, loader, args, tokenizer_step, tokenizer_metrics, eval_fn, tokens)
    if model.config.token_design == "mdct":  # the levels depend on the trained refiner: fitted last
        _fit_noise_filling(model, train_set, args)
        model.save_pretrained(args.output_dir)
    _save_feature_extractor(model.config, args.output_dir)
    return model, state


NOISE_FILLING_WINDOWS = 256  # training windows the noise-filling levels are fitted on (seeded draw)


def _fit_noise_filling(model, train_set, args) -> None:
    """Fit an mdct model's `noise_filling_levels` on training windows; the summary goes to noise_filling.json."""
    from .codebook_fitting import fit_noise_filling

    rows = np.random.default_rng(args.seed).permutation(len(train_set))[:NOISE_FILLING_WINDOWS]
    windows = ((row["input_values"], row["valid_samples"], row["channel_names"])
               for row in (train_set[int(i)] for i in rows))
    was_training = model.training
    summary = fit_noise_filling(model.eval(), windows)
    model.train(was_training)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "noise_filling.json").write_text(json.dumps(summary, indent=1))


def _save_feature_extractor(config, output_dir) -> None:
    """The preprocessing the model expects, beside it, so `AutoFeatureExtractor.from_pretrained(output_dir)` works."""
    from .feature_extraction_neurorvq import NeuroRVQFeatureExtractor

    NeuroRVQFeatureExtractor.for_model(config).save_pretrained(output_dir)
