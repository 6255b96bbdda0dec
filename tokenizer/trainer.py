"""The project's one Accelerate trainer, shared by the tokenizer and the LBM; it knows no model.

`train(model, loader, args, step_fn, metrics_fn, ...)` takes a model, a `step_fn(model, batch) -> output` whose
output has a scalar `.loss`, and optionally a `metrics_fn(output) -> dict` for the log. It runs AdamW with warm-up
+ cosine decay, gradient clipping, gradient accumulation, mixed precision (`no`/`bf16`/`fp16`), periodic
`save_state`, exact `resume` (model, optimizer, scheduler, RNG, data position) and seeding, on one process or many
(`accelerate launch`). It lives in the tokenizer package because that is the lowest layer (`lbm` imports it);
the tokenizer's own training is `training.train_tokenizer`.

Exact resume: a run killed after a checkpoint and resumed ends bit-identical to an uninterrupted one
(`tests/test_robustness.py`). What makes it exact:
- the data pipeline never draws from the global torch RNG (the DataLoader gets its own generator, and batch
  crops are seeded per batch), so the global RNG saved with a checkpoint is exactly the model's RNG stream
  (dropout, dead-code restarts, k-means) at that step, whatever the DataLoader had prefetched;
- the epoch is set on the prepared loader itself (Accelerate's `DataLoaderShard` re-applies its own
  iteration counter to the sampler on every `iter()`, which restarted data order at epoch 0 after a resume);
- records past the checkpoint's step are dropped from `log.jsonl` (no step is logged twice);
- checkpoints are written into a temporary folder and renamed when complete; folders without
  `trainer_state.json` (half-written by an older version, or damaged) are skipped with a warning.
A folder that already holds a run is refused unless `resume=True` (continue) or `overwrite=True` (replace).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

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
    overwrite: bool = False
    num_workers: int = 0
    progress: bool = True
    kmeans_vectors: int = 200_000  # mdct tokenizers: patches drawn for the codebooks' k-means

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "save_steps", "eval_steps", "logging_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainingArguments.{name} must be positive, got {getattr(self, name)}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"TrainingArguments.mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.warmup_steps < 0 or self.learning_rate <= 0:
            raise ValueError("TrainingArguments.warmup_steps must be >= 0 and learning_rate > 0")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite contradict each other: pass one of them")


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


def build_model(model_class, config, init_from=None, seed: int = 0):
    """`model_class` from a pretrained folder (`init_from`), else freshly seeded from a config object or JSON path."""
    if init_from is not None:
        return model_class.from_pretrained(init_from)
    config_class = model_class.config_class
    torch.manual_seed(seed)
    return model_class(config if isinstance(config, config_class) else config_class.from_json_file(str(config)))


# ----------------------------------------------------------------------------------------------------
# The run's folder: checkpoints, log, refusal to overwrite
# ----------------------------------------------------------------------------------------------------

CHECKPOINT_COMPLETE = "trainer_state.json"  # written last, just before the temporary folder is renamed
# What a training run writes into its output folder (removed by `overwrite=True`).
RUN_FILES = ("checkpoints", "log.jsonl", "training_args.json", "model.safetensors", "config.json",
             "generation_config.json")


def _step_of(path: Path) -> int | None:
    parts = path.name.split("-")
    return int(parts[1]) if len(parts) == 2 and parts[0] == "step" and parts[1].isdigit() else None


def list_checkpoints(output_dir: str | Path, warn: bool = False) -> list[Path]:
    """Complete checkpoints `checkpoints/step-N` of a run, oldest first.

    A folder without a readable `trainer_state.json` (written last) is incomplete: a process killed while
    writing it, or a damaged copy. It is skipped (with a warning when `warn`).
    """
    complete = []
    for path in (Path(output_dir) / "checkpoints").glob("step-*"):
        if not path.is_dir() or _step_of(path) is None:
            continue
        try:
            json.loads((path / CHECKPOINT_COMPLETE).read_text())
        except (OSError, ValueError):
            if warn:
                warnings.warn(f"skipping incomplete checkpoint {path} (no readable {CHECKPOINT_COMPLETE}: "
                              "the run was probably killed while writing it)", UserWarning, stacklevel=3)
            continue
        complete.append(path)
    return sorted(complete, key=_step_of)


def latest_checkpoint(output_dir: str | Path, warn: bool = False) -> Path | None:
    """The newest complete checkpoint of a run, or None (incomplete ones are skipped)."""
    checkpoints = list_checkpoints(output_dir, warn=warn)
    return checkpoints[-1] if checkpoints else None


def existing_run_files(output_dir: str | Path) -> list[str]:
    """Names of training-run files already in `output_dir` (empty when it is free for a new run)."""
    output_dir = Path(output_dir)
    return [name for name in RUN_FILES if (output_dir / name).exists()]


def check_output_dir(args: TrainingArguments) -> None:
    """Refuse to start a new run over an existing one (it would replace its model and mix checkpoints).

    Raises `ValueError` telling the user to pass `resume` / `overwrite` or choose another folder; checks that the
    folder can be written. Called by `train` before any work, and by the CLI before loading data.
    """
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output {output_dir} is a file, not a folder: choose a folder for the run")
    if args.resume:
        if latest_checkpoint(output_dir) is None:
            raise ValueError(f"resume requested but {output_dir / 'checkpoints'} holds no complete checkpoint: "
                             "start the run without --resume")
    else:
        found = existing_run_files(output_dir)
        if found and not args.overwrite:
            raise ValueError(
                f"{output_dir} already holds a training run ({', '.join(found)}): pass --resume (resume=True) to "
                "continue it, --overwrite (overwrite=True) to replace it, or choose another --output folder")
    parent = output_dir
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the run to {output_dir}: {parent} is not writable")


def _log(accelerator, path: Path, record: dict, state: TrainerState) -> None:
    state.history.append(record)
    if accelerator.is_main_process:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log records of steps <= `step` (a resumed run logs the later steps again); atomic rewrite."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)


def _save_checkpoint(accelerator, output_dir: Path, state: TrainerState, keep: int) -> None:
    """`save_state` into `checkpoints/.incomplete/step-N`, then (complete) rename to `checkpoints/step-N`.

    A process killed while saving leaves only the hidden temporary folder, which resuming ignores.
    """
    root = output_dir / "checkpoints"
    checkpoint = root / f"step-{state.step}"
    temporary = root / ".incomplete" / checkpoint.name
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))  # every process writes its RNG state here
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / CHECKPOINT_COMPLETE).write_text(json.dumps(state.state_dict()))
        if checkpoint.exists():
            shutil.rmtree(checkpoint)
        os.replace(temporary, checkpoint)
        if keep > 0:
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------


@dataclass
class _PreparedRun:
    """What `accelerator.prepare` returned (model wrapped for DDP / mixed precision), and where the run writes."""

    accelerator: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: Any  # Accelerate's DataLoaderShard
    sampler: Any  # the user loader's (batch) sampler, whose `set_epoch` fixes the data order
    output_dir: Path

    @property
    def log_path(self) -> Path:
        return self.output_dir / "log.jsonl"


class _Throughput:
    """Tokens per second since the last training log record, and seconds since the start of the run."""

    def __init__(self, tokens_fn: Callable | None):
        self.tokens_fn = tokens_fn
        self.started = time.perf_counter()
        self.restart()

    def restart(self) -> None:
        self.tokens, self.window_start = 0, time.perf_counter()

    def count(self, batch) -> None:
        self.tokens += self.tokens_fn(batch) if self.tokens_fn else 0

    def record(self, num_processes: int) -> dict:
        elapsed = time.perf_counter() - self.window_start
        return {"tokens_per_second": self.tokens * num_processes / max(elapsed, 1e-9),
                "elapsed_seconds": time.perf_counter() - self.started}


def _prepare(model: torch.nn.Module, train_loader, args: TrainingArguments) -> _PreparedRun:
    """Accelerator, seeding, AdamW and the warm-up + cosine schedule, all passed through `accelerator.prepare`."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import get_cosine_schedule_with_warmup

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
    return _PreparedRun(accelerator, model, optimizer, scheduler, loader, sampler, Path(args.output_dir))


def _start_or_resume(run: _PreparedRun, args: TrainingArguments) -> TrainerState:
    """The run's state: step 0 (replacing an old run when `overwrite`), or the latest checkpoint's when `resume`
    (model, optimizer, scheduler and RNG restored; log records after it dropped). Writes `training_args.json`."""
    accelerator, output_dir = run.accelerator, run.output_dir
    state = TrainerState()
    if args.resume:
        checkpoint = latest_checkpoint(output_dir, warn=accelerator.is_main_process)
        if checkpoint is None:
            raise ValueError(f"resume requested but {output_dir / 'checkpoints'} holds no complete checkpoint")
        try:
            accelerator.load_state(str(checkpoint))
        except Exception as error:  # a damaged checkpoint: say which, and what to do
            raise ValueError(f"cannot resume from {checkpoint}: {type(error).__name__}: {error} (delete this "
                             "checkpoint folder to resume from the previous one)") from error
        state.load_state_dict(json.loads((checkpoint / CHECKPOINT_COMPLETE).read_text()))
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")
        if accelerator.is_main_process:
            _truncate_log(run.log_path, state.step)  # steps after the checkpoint are trained (and logged) again
    elif args.overwrite and accelerator.is_main_process:
        for name in existing_run_files(output_dir):
            target = output_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(output_dir / "checkpoints" / ".incomplete", ignore_errors=True)  # a killed save's leftovers
        (output_dir / "training_args.json").write_text(json.dumps(asdict(args), indent=1))
    return state


def _epoch_batches(run: _PreparedRun, state: TrainerState):
    """The batches of epoch `state.epoch` from `state.batch_in_epoch` on (the data position of a resumed run)."""
    if hasattr(run.loader, "set_epoch"):  # Accelerate's loader re-applies its own epoch to the sampler on iter()
        run.loader.set_epoch(state.epoch)
    if hasattr(run.sampler, "set_epoch"):
        run.sampler.set_epoch(state.epoch)
    if state.batch_in_epoch:
        return run.accelerator.skip_first_batches(run.loader, state.batch_in_epoch)
    return run.loader


def _micro_step(run: _PreparedRun, step_fn: Callable, batch, max_grad_norm: float):
    """Forward, backward and (on the last micro-batch of an accumulation) clipping and one optimizer step."""
    accelerator = run.accelerator
    with accelerator.accumulate(run.model):
        output = step_fn(run.model, batch)
        accelerator.backward(output.loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(run.model.parameters(), max_grad_norm)
        run.optimizer.step()  # Accelerate skips the step (and the scheduler's) until gradients are synced
        run.scheduler.step()
        run.optimizer.zero_grad()
    return output


def _log_training(run: _PreparedRun, state: TrainerState, output, metrics_fn: Callable | None,
                  throughput: _Throughput) -> dict:
    """One `log.jsonl` record: loss (mean over processes), learning rate, throughput and `metrics_fn(output)`."""
    accelerator = run.accelerator
    speed = throughput.record(accelerator.num_processes)
    record = {"step": state.step, "loss": accelerator.gather(output.loss.detach()).mean().item(),
              "lr": run.scheduler.get_last_lr()[0], **speed}
    if metrics_fn:
        record.update(metrics_fn(output))
    _log(accelerator, run.log_path, record, state)
    return record


def _log_evaluation(run: _PreparedRun, state: TrainerState, eval_fn: Callable) -> None:
    """`eval_fn` on the unwrapped model in eval mode, logged as `eval/<name>`."""
    run.model.eval()
    record = {"step": state.step,
              **{f"eval/{k}": v for k, v in eval_fn(run.accelerator.unwrap_model(run.model)).items()}}
    run.model.train()
    _log(run.accelerator, run.log_path, record, state)


def _is_due(step: int, every: int, max_steps: int) -> bool:
    """Every `every` optimizer steps, and at the last one."""
    return step % every == 0 or step == max_steps


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
    from tqdm.auto import tqdm

    check_output_dir(args)
    run = _prepare(model, train_loader, args)
    state = _start_or_resume(run, args)
    bar = tqdm(total=args.max_steps, initial=state.step, desc="training",
               disable=not (args.progress and run.accelerator.is_main_process))
    throughput = _Throughput(tokens_fn)
    run.model.train()
    while state.step < args.max_steps:
        for batch in _epoch_batches(run, state):
            output = _micro_step(run, step_fn, batch, args.max_grad_norm)
            state.batch_in_epoch += 1
            throughput.count(batch)
            if not run.accelerator.sync_gradients:  # a micro-batch of an accumulation: no optimizer step yet
                continue
            state.step += 1
            bar.update(1)
            if _is_due(state.step, args.logging_steps, args.max_steps):
                record = _log_training(run, state, output, metrics_fn, throughput)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                throughput.restart()
            if eval_fn and _is_due(state.step, args.eval_steps, args.max_steps):
                _log_evaluation(run, state, eval_fn)
            if _is_due(state.step, args.save_steps, args.max_steps):
                _save_checkpoint(run.accelerator, run.output_dir, state, args.save_total_limit)
            if state.step >= args.max_steps:
                break
        else:  # the epoch ran out before max_steps
            state.epoch += 1
            state.batch_in_epoch = 0
    bar.close()
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        run.accelerator.unwrap_model(run.model).save_pretrained(run.output_dir)
    run.accelerator.end_training()
    return state
