"""What the `neurorvq` command groups share: checks at the boundary, model loading, argparse types and the
training options of `train-tokenizer` and `train-lbm`.

The checks turn the user's mistakes into exit code 2 and one line, before any work. Heavy imports (torch, the
models) stay inside the functions, so building the parser imports none of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path


# ---- checks at the boundary: the user's mistakes end in exit code 2 and one line, before any work ----------


def check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {device!r} is not a torch device: use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: unsupported device type {parsed.type!r}; use cpu, cuda or mps")


def check_file(path, option: str, what: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{option} {path}: no such {what}" + (" (it is a folder)" if Path(path).is_dir() else ""))


def check_outputs(args: argparse.Namespace, outputs: dict, inputs=()) -> None:
    """`outputs`: option -> (path or None, format: "recording", "figure", "json", suffixes or None). All of them
    against each other and the inputs, then each (format, --overwrite, writable), before any work."""
    from neurorvq.pipelines._eeg import check_output_paths

    check_output_paths(outputs, getattr(args, "overwrite", False), inputs=inputs)


# ---- models by folder or bundled name ----------------------------------------------------------------------


def load_tokenizer(name):
    """A NeuroRVQ tokenizer by folder or bundled name (e.g. neurorvq/tokenizer-small)."""
    from neurorvq.tokenizer import NeuroRVQTokenizer
    from neurorvq.tokenizer.loading import load_model

    return load_model(NeuroRVQTokenizer, name)


def load_lbm(name):
    """Any LBM (depth-wise, flattened or spatial) by its config's model_type."""
    from neurorvq.lbm.training import load_lbm as load

    return load(name)


# ---- argparse types ------------------------------------------------------------------------------------------


def _int_at_least(text: str, least: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0 (otherwise exit code 2 with a message)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (otherwise exit code 2 with a message)."""
    return _int_at_least(text, 0, "an integer >= 0")


# argparse type: comma-separated floats, e.g. 1,2. A lambda on purpose: argparse names the type in its error for a
# bad value, which has always read "invalid <lambda> value: 'x'" (a def would rename it).
float_list = lambda text: [float(v) for v in text.split(",")]  # noqa: E731


# ---- the training options of train-tokenizer and train-lbm (one Accelerate core) ----------------------------


def add_training_options(parser: argparse.ArgumentParser, learning_rate: float) -> None:
    group = parser.add_argument_group("training (Accelerate: run under `accelerate launch` for several processes)")
    group.add_argument("--max-steps", type=int, default=2000, help="optimizer steps (default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=8, help="windows per process per micro-batch (default: %(default)s)")
    group.add_argument("--learning-rate", type=float, default=learning_rate, help="peak AdamW learning rate (default: %(default)s)")
    group.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay on matrices (default: %(default)s)")
    group.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps before cosine decay (default: %(default)s)")
    group.add_argument("--max-grad-norm", type=float, default=3.0, help="gradient clipping norm, 0 disables (default: %(default)s)")
    group.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-batches per optimizer step (default: %(default)s)")
    group.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no",
                       help="autocast dtype where the hardware has it; the quantizer always runs in fp32 (default: %(default)s)")
    group.add_argument("--save-steps", type=int, default=250, help="save_state every N steps (default: %(default)s)")
    group.add_argument("--eval-steps", type=int, default=250, help="validate every N steps (default: %(default)s)")
    group.add_argument("--logging-steps", type=int, default=10, help="log every N steps to OUTPUT/log.jsonl (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0, help="seed of weights, data order and k-means (default: %(default)s)")
    group.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in OUTPUT/checkpoints "
                       "(exact: ends bit-identical to an uninterrupted run)")
    group.add_argument("--overwrite", action="store_true", help="replace a run already in OUTPUT (without it, and without "
                       "--resume, an OUTPUT holding a run is refused)")
    group.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")


def _training_arguments(args: argparse.Namespace):
    from neurorvq.tokenizer.training import TrainingArguments

    return TrainingArguments(
        output_dir=args.output, max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm,
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        save_steps=args.save_steps, eval_steps=args.eval_steps, logging_steps=args.logging_steps, seed=args.seed,
        resume=args.resume, overwrite=args.overwrite, num_workers=args.num_workers,
    )


def check_training(args: argparse.Namespace):
    """The training run's TrainingArguments, once --config, --data and --output have been checked."""
    from neurorvq.tokenizer.training import check_output_dir

    check_file(args.config, "--config", "config file")
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such dataset folder")
    training_args = _training_arguments(args)
    check_output_dir(training_args)
    return training_args
