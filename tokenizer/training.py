"""One Accelerate training core for every model of the project, and the tokenizer's use of it.

`train(...)` runs AdamW with warm-up + cosine decay, gradient clipping, gradient accumulation, mixed precision
(`no`/`bf16`/`fp16`), periodic `save_state`, exact `resume` (model, optimizer, scheduler, RNG, data position)
and seeding, on one process or many (`accelerate launch`). Models bring a `step_fn(model, batch) -> output`
whose output has `.loss`, and optionally a `metrics_fn(output) -> dict` for the log.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch


@dataclass
class TrainingArguments:
    """Hyper-parameters and bookkeeping of a training run (all optimizer steps, not micro-batches)."""

    output_dir: str
    max_steps: int = 1000
    batch_size: int = 8
    learning_rate: float = 5e-4
    weight_decay: float = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 50
    max_grad_norm: float = 3.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    save_steps: int = 250
    save_total_limit: int = 2
    eval_steps: int = 250
    logging_steps: int = 10
    seed: int = 0
    deterministic: bool = False
    resume: bool = False
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "save_steps", "eval_steps", "logging_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainingArguments.{name} must be positive, got {getattr(self, name)}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"TrainingArguments.mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.warmup_steps < 0 or self.learning_rate <= 0:
            raise ValueError("TrainingArguments.warmup_steps must be >= 0 and learning_rate > 0")


@dataclass
class TrainerState:
    """Position of the run, saved with every checkpoint so `resume` continues at the same batch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list = field(default_factory=list)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and embedding tables (1-D or named *embed*/*token*)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or "embed" in name or "token" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    checkpoints = sorted((Path(output_dir) / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def train(
    model: torch.nn.Module,
    train_loader: torch.utils.data.DataLoader,
    args: TrainingArguments,
    step_fn: Callable,
    metrics_fn: Callable | None = None,
    eval_fn: Callable | None = None,
    tokens_fn: Callable | None = None,
) -> TrainerState:
    """Train `model` for `args.max_steps` optimizer steps; return the final state.

    Args:
        train_loader: a DataLoader whose `batch_sampler` (or `sampler`) has `set_epoch(epoch)`.
        step_fn: `(model, batch) -> output` with a scalar `output.loss`.
        metrics_fn: `(output) -> dict[str, float]` logged every `logging_steps`.
        eval_fn: `(unwrapped_model) -> dict[str, float]` every `eval_steps` and at the end.
        tokens_fn: `(batch) -> int` tokens in a batch, for the tokens/s figure.

    Writes `output_dir/log.jsonl`, checkpoints under `output_dir/checkpoints/step-N` (Accelerate
    `save_state`) and the final model with `save_pretrained(output_dir)`.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        # codebooks are synchronised by the quantizer itself; DDP's buffer broadcast would hide a bug there
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    set_seed(args.seed, deterministic=args.deterministic)  # deterministic: bit-exact resume (scatter-adds)
    optimizer = torch.optim.AdamW(_parameter_groups(model, args.weight_decay), lr=args.learning_rate,
                                  betas=tuple(args.adam_betas))
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)
    sampler = train_loader.batch_sampler if hasattr(train_loader.batch_sampler, "set_epoch") else train_loader.sampler
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    state = TrainerState()
    if args.resume:
        checkpoint = latest_checkpoint(output_dir)
        if checkpoint is None:
            raise ValueError(f"resume requested but {output_dir / 'checkpoints'} holds no checkpoint")
        accelerator.load_state(str(checkpoint))
        state.load_state_dict(json.loads((checkpoint / "trainer_state.json").read_text()))
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")

    log_path = output_dir / "log.jsonl"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_args.json").write_text(json.dumps(asdict(args), indent=1))
    bar = tqdm(total=args.max_steps, initial=state.step, desc="training",
               disable=not (args.progress and accelerator.is_main_process))
    window_tokens, window_start, started = 0, time.perf_counter(), time.perf_counter()
    model.train()
    while state.step < args.max_steps:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(state.epoch)
        epoch_loader = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                output = step_fn(model, batch)
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state.batch_in_epoch += 1
            window_tokens += tokens_fn(batch) if tokens_fn else 0
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            bar.update(1)
            if state.step % args.logging_steps == 0 or state.step == args.max_steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": state.step, "loss": accelerator.gather(output.loss.detach()).mean().item(),
                          "lr": scheduler.get_last_lr()[0],
                          "tokens_per_second": window_tokens * accelerator.num_processes / max(elapsed, 1e-9),
                          "elapsed_seconds": time.perf_counter() - started}
                if metrics_fn:
                    record.update(metrics_fn(output))
                _log(accelerator, log_path, record, state)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                window_tokens, window_start = 0, time.perf_counter()
            if eval_fn and (state.step % args.eval_steps == 0 or state.step == args.max_steps):
                model.eval()
                record = {"step": state.step, **{f"eval/{k}": v for k, v in eval_fn(accelerator.unwrap_model(model)).items()}}
                model.train()
                _log(accelerator, log_path, record, state)
            if state.step % args.save_steps == 0 or state.step == args.max_steps:
                _save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
            if state.step >= args.max_steps:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(output_dir)
    accelerator.end_training()
    return state


def _log(accelerator, path: Path, record: dict, state: TrainerState) -> None:
    state.history.append(record)
    if accelerator.is_main_process:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _save_checkpoint(accelerator, output_dir: Path, state: TrainerState, keep: int) -> None:
    checkpoint = output_dir / "checkpoints" / f"step-{state.step}"
    accelerator.save_state(str(checkpoint))
    if accelerator.is_main_process:
        (checkpoint / "trainer_state.json").write_text(json.dumps(state.state_dict()))
    if accelerator.is_main_process and keep > 0:
        checkpoints = sorted((output_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in checkpoints[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def build_model(model_class, config, init_from=None, seed: int = 0):
    """`model_class` from a pretrained folder (`init_from`), else freshly seeded from a config object or JSON path."""
    if init_from is not None:
        return model_class.from_pretrained(init_from)
    config_class = model_class.config_class
    torch.manual_seed(seed)
    return model_class(config if isinstance(config, config_class) else config_class.from_json_file(str(config)))


# ----------------------------------------------------------------------------------------------------
# The tokenizer's use of the core
# ----------------------------------------------------------------------------------------------------


def tokenizer_step(model, batch):
    return model(batch["input_values"], batch["channel_names"], padding_mask=batch["padding_mask"])


def tokenizer_metrics(output) -> dict:
    """Loss terms and, per (scale, stage), codebook usage and perplexity of this batch."""
    record = {name: float(getattr(output, name).detach()) for name in
              ("quantizer_loss", "amplitude_loss", "phase_loss", "time_loss")}
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
        for name in ("loss", "quantizer_loss", "amplitude_loss", "phase_loss", "time_loss"):
            totals[name] = totals.get(name, 0.0) + float(getattr(output, name)) * len(indices)
        windows += len(indices)
    return {name: value / max(windows, 1) for name, value in totals.items()}


def train_tokenizer(config, data_dir: str | Path, args: TrainingArguments, init_from: str | Path | None = None,
                    eval_batches: int | None = 8):
    """Train a [`NeuroRVQTokenizer`] on a prepared dataset (`neurorvq prepare`); returns (model, state)."""
    from .data import ShapeBucketBatchSampler, collate_windows, load_prepared, window_shapes
    from .modeling_neurorvq import NeuroRVQTokenizer

    train_set = load_prepared(data_dir, "train")
    validation_set = load_prepared(data_dir, "validation")
    if len(train_set) == 0:
        raise ValueError(f"{data_dir} has no training window")
    model = build_model(NeuroRVQTokenizer, config, init_from, args.seed)
    sampler = ShapeBucketBatchSampler(window_shapes(train_set), args.batch_size, shuffle=True, seed=args.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_windows,
                                         num_workers=args.num_workers)
    eval_fn = None
    if len(validation_set):
        eval_fn = lambda m: validation_loss(m, validation_set, args.batch_size, eval_batches)  # noqa: E731
    tokens = lambda batch: int(batch["input_values"].shape[0] * batch["input_values"].shape[1]  # noqa: E731
                               * batch["input_values"].shape[2] // model.config.patch_size)
    state = train(model, loader, args, tokenizer_step, tokenizer_metrics, eval_fn, tokens)
    return model, state
