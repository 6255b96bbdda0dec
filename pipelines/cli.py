"""The `neurorvq` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


# ---- checks at the boundary: the user's mistakes end in exit code 2 and one line, before any work ----------


def _check_device(device: str) -> None:
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


def _check_file(path, option: str, what: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{option} {path}: no such {what}" + (" (it is a folder)" if Path(path).is_dir() else ""))


def _check_outputs(args: argparse.Namespace, outputs: dict, inputs=()) -> None:
    """`outputs`: option -> (path or None, format: "recording", "figure", "json", suffixes or None). All of them
    against each other and the inputs, then each (format, --overwrite, writable), before any work."""
    from neurorvq.pipelines._eeg import check_output_paths

    check_output_paths(outputs, getattr(args, "overwrite", False), inputs=inputs)


def _load(model_class, name):
    from neurorvq.tokenizer.loading import load_model

    return load_model(model_class, name)


def load_lbm(name):
    """Any LBM (depth-wise, flattened or spatial) by its config's model_type."""
    from neurorvq.lbm.training import load_lbm as load

    return load(name)


def _convert_official(args: argparse.Namespace) -> int:
    from neurorvq.tokenizer.convert_official import convert_official_checkpoint

    _check_file(args.checkpoint, "checkpoint", "file")
    if (Path(args.output) / "model.safetensors").exists() and not args.overwrite:
        raise FileExistsError(f"--output {args.output} already holds a model: pass --overwrite to replace it")
    folder = convert_official_checkpoint(args.checkpoint, args.output)
    print(f"wrote {folder} (load with NeuroRVQTokenizer.from_pretrained({str(folder)!r}))")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from neurorvq.tokenizer.data import parse_label_mapping, prepare_dataset
    from neurorvq.tokenizer.feature_extraction_neurorvq import NeuroRVQFeatureExtractor

    if args.no_labels and (args.label_map or args.file_labels):
        raise ValueError("--no-labels leaves every window unlabelled: do not combine it with --label-map or --file-labels")
    label_map = parse_label_mapping(args.label_map, "--label-map") if args.label_map else None
    file_labels = parse_label_mapping(args.file_labels, "--file-labels") if args.file_labels else None
    extractor = NeuroRVQFeatureExtractor(window_patches=args.window_patches)
    report = prepare_dataset(
        args.inputs, args.output, extractor, validation_fraction=args.validation_fraction, split_by=args.split_by,
        seed=args.seed, on_error=args.on_error, on_unknown_channel=args.on_unknown_channel,
        text_channel_names=args.text_channel_names.split(",") if args.text_channel_names else None,
        labels="none" if args.no_labels else "builtin", label_map=label_map, file_labels=file_labels,
        corpus_policy=args.corpus_policy,
    )
    print(("reused cached dataset " if report.reused_cache else "wrote dataset ") + report.output_dir)
    for split, count in report.windows.items():
        print(f"  {split}: {count} windows from {len(report.subjects[split])} subjects")
        counts = report.labels.get(split, {})
        if counts:
            print("    labels: " + ", ".join(f"{label or '(unlabelled)'} {n}" for label, n in counts.items()))
    print(f"  skipped files: {len(report.skipped)}")
    for path, reason in report.skipped:
        print(f"    {path}: {reason}")
    print(f"  truncated files (used as far as they go): {len(report.truncated)}")
    for path, message in report.truncated:
        print(f"    {message}")
    return 0


def _training_arguments(args: argparse.Namespace):
    from neurorvq.tokenizer.training import TrainingArguments

    return TrainingArguments(
        output_dir=args.output, max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm,
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        save_steps=args.save_steps, eval_steps=args.eval_steps, logging_steps=args.logging_steps, seed=args.seed,
        resume=args.resume, overwrite=args.overwrite, num_workers=args.num_workers,
    )


def _check_training(args: argparse.Namespace):
    from neurorvq.tokenizer.training import check_output_dir

    _check_file(args.config, "--config", "config file")
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such dataset folder")
    training_args = _training_arguments(args)
    check_output_dir(training_args)
    return training_args


def _add_training_options(parser: argparse.ArgumentParser, learning_rate: float) -> None:
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


def _train_tokenizer(args: argparse.Namespace) -> int:
    from neurorvq.tokenizer.training import train_tokenizer

    model, state = train_tokenizer(args.config, args.data, _check_training(args), init_from=args.init_from)
    print(f"trained {state.step} steps; model saved to {args.output}")
    return 0


def _evaluate_tokenizer(args: argparse.Namespace) -> int:
    import json

    from neurorvq.tokenizer import NeuroRVQTokenizer
    from neurorvq.tokenizer.data import load_prepared
    from neurorvq.tokenizer.evaluation import evaluate_tokenizer, format_table, plot_evaluation

    _check_outputs(args, {"--output": (args.output, "json"), "--figure": (args.figure, "figure")})
    model = _load(NeuroRVQTokenizer, args.model)
    rows = load_prepared(args.data, args.split)
    results = evaluate_tokenizer(model, rows, batch_size=args.batch_size, max_windows=args.max_windows)
    print(format_table(results))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=1))
        print(f"metrics: {args.output}")
    if args.figure:
        print(f"figure: {plot_evaluation(model, rows, results, args.figure)}")
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from neurorvq.lbm.data import tokenize_dataset
    from neurorvq.tokenizer import NeuroRVQTokenizer

    tokenizer = _load(NeuroRVQTokenizer, args.tokenizer)
    result = tokenize_dataset(args.data, tokenizer, args.output, batch_size=args.batch_size)
    print(("reused cached codes " if result["reused_cache"] else "wrote codes ") + str(args.output))
    for split, count in result["windows"].items():
        print(f"  {split}: {count} windows")
    return 0


def _train_lbm(args: argparse.Namespace) -> int:
    from neurorvq.lbm.training import train_lbm

    model, state = train_lbm(args.config, args.data, _check_training(args), init_from=args.init_from)
    print(f"trained {state.step} steps; model saved to {args.output}")
    return 0


def _evaluate_lbm(args: argparse.Namespace) -> int:
    import json

    from neurorvq.lbm.data import load_codes
    from neurorvq.lbm.evaluation import evaluate_lbm, format_nll, format_realism, plot_learning_curve
    from neurorvq.tokenizer import NeuroRVQTokenizer
    from neurorvq.tokenizer.data import load_prepared

    _check_outputs(args, {"--output": (args.output, "json"), "--figure": (args.figure, "figure"),
                          "--curve": (args.curve, "figure")})
    log = Path(args.model) / "log.jsonl"
    if args.curve and not log.is_file():
        raise ValueError(f"--curve reads the training log, but {log} does not exist: pass the training run's folder")
    model = load_lbm(args.model).eval()
    tokenizer = _load(NeuroRVQTokenizer, args.tokenizer or model.config.tokenizer_name_or_path).eval()
    results = evaluate_lbm(model, tokenizer, load_codes(args.codes, "train"), load_codes(args.codes, "validation"),
                           load_prepared(args.data, "validation"), num_samples=args.samples, seconds=args.seconds,
                           seed=args.seed, temperature=args.temperature, top_p=args.top_p, figure=args.figure,
                           train_rows=load_prepared(args.data, "train"))
    print(format_nll(results))
    print(format_realism(results["realism"]))
    if model.config.condition_names and not args.no_conditions:
        from neurorvq.lbm.condition_evaluation import condition_report, format_condition_report

        results["conditions"] = condition_report(model, tokenizer, load_prepared(args.data, "train"),
                                                 load_prepared(args.data, "validation"),
                                                 num_samples=args.condition_samples, seconds=args.seconds,
                                                 guidance_scales=args.guidance_scales, temperature=args.temperature,
                                                 seed=args.seed)
        print(format_condition_report(results["conditions"]))
    if args.curve:
        results["learning_curve"] = str(plot_learning_curve(log, results, args.curve))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer > 0 (otherwise exit code 2 with a message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _generate(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline

    from neurorvq.pipelines._eeg import resolve_channels, save_raw
    from neurorvq.pipelines.plotting import TRAINING_PSD, load_training_psd, plot_recording
    from neurorvq.tokenizer import NeuroRVQTokenizer

    from neurorvq.lbm.sampling import check_sampling_controls

    if args.channels and args.montage:
        raise ValueError("pass --channels or --montage, not both")
    _check_outputs(args, {"--out": (args.out, "recording"), "--plot": (args.plot, "figure")},
                   inputs=[args.prompt] if args.prompt else [])
    if args.prompt:
        _check_file(args.prompt, "--prompt", "recording")
    _check_device(args.device)
    check_sampling_controls(1.0 if args.temperature is None else args.temperature, args.top_k, args.top_p)
    channels = resolve_channels(args.channels, args.montage if (args.channels or args.prompt) else
                                (args.montage or "standard_1020"))
    model = load_lbm(args.model)
    tokenizer = _load(NeuroRVQTokenizer, args.tokenizer or model.config.tokenizer_name_or_path)
    generator = pipeline("eeg-generation", model=model, tokenizer_model=tokenizer, device=args.device)
    out = generator(args.prompt, seconds=args.seconds, channel_names=channels, temperature=args.temperature,
                    slow_temperature=args.slow_temperature, stream_temperatures=args.stream_temperatures,
                    condition=args.condition,
                    guidance_scale=args.guidance_scale, num_rounds=args.num_rounds, unmasking=args.unmasking,
                    top_k=args.top_k, top_p=args.top_p, seed=args.seed, prompt_seconds=args.prompt_seconds,
                    return_raw=True, progress=True)
    path = save_raw(out["raw"], args.out, overwrite=args.overwrite)
    seconds = out["eeg"].shape[-1] / out["sampling_rate"]
    print(f"wrote {path}: {len(out['channel_names'])} channels x {seconds:g} s at {out['sampling_rate']} Hz"
          + (f" (first {out['prompt_seconds']} s: the prompt)" if out["prompt_seconds"] else ""))
    if args.plot:
        reference = load_training_psd()
        if reference is None:
            print(f"note: {TRAINING_PSD} not found; plotting the sample PSD alone "
                  "(create it with `neurorvq training-psd`)")
        print(f"figure: {plot_recording(out['eeg'], out['channel_names'], args.plot, reference=reference, sampling_rate=out['sampling_rate'])}")
    return 0


def _reconstruct(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline

    from neurorvq.pipelines._eeg import save_raw
    from neurorvq.pipelines.plotting import plot_recording
    from neurorvq.tokenizer import NeuroRVQTokenizer

    _check_file(args.recording, "recording", "file")
    _check_outputs(args, {"--out": (args.out, "recording"), "--plot": (args.plot, "figure")},
                   inputs=[args.recording])
    _check_device(args.device)
    text = Path(args.recording).suffix.lower() == ".txt"
    if text and not args.channel_names:
        raise ValueError(f"{args.recording} is a text file of microvolt columns: pass --channel-names (and "
                         "--sampling-rate unless the file name holds it, e.g. _200Hz)")
    model = _load(NeuroRVQTokenizer, args.tokenizer)
    reconstructor = pipeline("eeg-reconstruction", model=model, device=args.device)
    extra = {"channel_names": args.channel_names.split(","), "sampling_rate": args.sampling_rate} if text else {}
    out = reconstructor(args.recording, max_seconds=args.max_seconds, return_raw=True,
                        normalize_phase=args.normalize_phase, noise_filling=args.noise_filling, **extra)
    print(f"{len(out['channel_names'])} channels x {out['original'].shape[-1] / out['sampling_rate']:g} s: "
          f"z-scored MSE {out['zscored_mse']:.4f}, PCC {out['pcc']:.4f}")
    if args.out:
        print(f"wrote {save_raw(out['raw'], args.out, overwrite=args.overwrite)}")
    if args.plot:
        print(f"figure: {plot_recording(out['reconstruction'], out['channel_names'], args.plot, title='reconstruction', other=out['original'], sampling_rate=out['sampling_rate'])}")
    return 0


def _training_psd(args: argparse.Namespace) -> int:
    from neurorvq.pipelines.plotting import compute_training_psd

    _check_outputs(args, {"--output": (args.output, "json")})
    print(f"wrote {compute_training_psd(args.data, args.output, split=args.split, max_windows=args.max_windows)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from neurorvq.lbm.sampling import DEFAULT_TEMPERATURE

    parser = argparse.ArgumentParser(
        prog="neurorvq",
        description="NeuroRVQ EEG tokenizer and large brainwave models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert-official",
        help="convert a released NeuroRVQ tokenizer checkpoint into a from_pretrained folder",
        description="Read a released NeuroRVQ tokenizer state dict (.safetensors, or .pt/.pth read with "
                    "torch.load(weights_only=True)), infer the config from its tensor shapes and write a folder "
                    "(config.json + model.safetensors) that NeuroRVQTokenizer.from_pretrained loads.",
    )
    convert.add_argument("checkpoint", help="path to the released state dict (.safetensors, .pt, .pth)")
    convert.add_argument("--output", "-o", required=True, help="folder to write the converted model to")
    convert.add_argument("--overwrite", action="store_true", help="replace a model already in --output")
    convert.set_defaults(run=_convert_official)

    prepare = commands.add_parser(
        "prepare",
        help="preprocess recordings into a windowed datasets folder, split by subject",
        description="Read recordings (any file MNE reads, one-column microvolt .txt, or folders of them), apply the "
                    "released preprocessing, cut windows and save a Hugging Face DatasetDict (train / validation, "
                    "split by subject or recording, never by window). Re-running on unchanged inputs reuses it.",
    )
    prepare.add_argument("inputs", nargs="+", help="recording files or folders (searched recursively)")
    prepare.add_argument("--output", "-o", required=True, help="dataset folder to write")
    prepare.add_argument("--validation-fraction", type=float, default=0.15,
                         help="share of subjects held out for validation (default: %(default)s)")
    prepare.add_argument("--split-by", choices=["subject", "recording"], default="subject",
                         help="unit of the train/validation split (default: %(default)s)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    prepare.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                         help="unreadable or corrupt files: stop with an error naming the file, or skip and count them "
                              "(default: %(default)s)")
    prepare.add_argument("--on-unknown-channel", choices=["raise", "drop"], default="drop",
                         help="channels outside the model vocabulary: error, or drop with a warning (default: %(default)s)")
    prepare.add_argument("--window-patches", type=int, default=None,
                         help="one-second patches per window (default: as many as fit in 256 tokens)")
    prepare.add_argument("--text-channel-names", default=None,
                         help="comma-separated labels of the columns of .txt recordings (without them .txt files are skipped)")
    labels = prepare.add_argument_group(
        "labels (column `label` of every window, '' = unlabelled; windows never span a label change)",
        "Without --label-map/--file-labels the corpus' own labels are used (EEGMAT rest/arithmetic; EEGMMIDB "
        "eyes_open/eyes_closed, rest/motor_execution/motor_imagery); other recordings stay unlabelled.")
    labels.add_argument("--label-map", default=None, metavar="DESC=LABEL,...|FILE.json",
                        help="labels from the recordings' annotations: annotation description -> label, e.g. "
                             "T0=rest,T1=task (unmapped annotations label nothing), or a JSON file "
                             '({"T0": "rest"} or {"*R03.edf": {"T1": "left"}})')
    labels.add_argument("--file-labels", default=None, metavar="PATTERN=LABEL,...|FILE.json",
                        help="labels of whole files by file name pattern (fnmatch), e.g. '*_1.edf=rest,*_2.edf=task', "
                             "or a JSON file")
    labels.add_argument("--no-labels", action="store_true", help="leave every window unlabelled")
    prepare.add_argument("--corpus-policy", default=None, metavar="FILE.json",
                         help="the corpus' reserved hold-out subjects (never prepared) and its own labels (default: the "
                              "shared corpus's, configs/corpus/shared-eeg.json, installed as "
                              "neurorvq/tokenizer/corpus/shared-eeg.json)")
    prepare.set_defaults(run=_prepare)

    train = commands.add_parser(
        "train-tokenizer",
        help="train a NeuroRVQ tokenizer on a prepared dataset with Accelerate",
        description="Train a NeuroRVQ tokenizer (AdamW, warm-up + cosine, clipping, accumulation, mixed precision, "
                    "periodic save_state, --resume). Several processes or GPUs: `accelerate launch --config_file "
                    "configs/accelerate/ddp.yaml -m neurorvq.pipelines.cli train-tokenizer ...`.",
    )
    train.add_argument("--config", required=True, help="model config JSON (e.g. configs/tokenizer/small.json)")
    train.add_argument("--data", required=True, help="dataset folder written by `neurorvq prepare`")
    train.add_argument("--output", "-o", required=True, help="folder for checkpoints, log.jsonl and the final model")
    train.add_argument("--init-from", default=None, help="start from this pretrained tokenizer instead of random weights")
    _add_training_options(train, learning_rate=1e-3)
    train.set_defaults(run=_train_tokenizer)

    evaluate = commands.add_parser(
        "evaluate-tokenizer",
        help="fidelity, rate and codebook usage of a tokenizer on a prepared split, against a DCT codec",
        description="Reconstruct every window of a prepared split and report the z-scored MSE (the paper's metric), "
                    "PCC, per-band NMSE, bits per channel-second and codebook usage per stage, with a DCT transform "
                    "codec at equal bits and both rate-distortion curves (1..K stages). Optionally a PNG figure.",
    )
    evaluate.add_argument("model", help="tokenizer folder, or a bundled name such as neurorvq/tokenizer-small")
    evaluate.add_argument("--data", required=True, help="dataset folder written by `neurorvq prepare`")
    evaluate.add_argument("--split", default="validation", help="split to evaluate (default: %(default)s)")
    evaluate.add_argument("--batch-size", type=int, default=16, help="windows per encode call (default: %(default)s)")
    evaluate.add_argument("--max-windows", type=int, default=None, help="evaluate at most this many windows")
    evaluate.add_argument("--output", default=None, help="write the metrics as JSON here")
    evaluate.add_argument("--figure", default=None, help="write a PNG (traces, PSD overlay, rate-distortion) here")
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing --output / --figure files")
    evaluate.set_defaults(run=_evaluate_tokenizer)

    tokenize = commands.add_parser(
        "tokenize",
        help="encode a prepared dataset into code datasets with a tokenizer (cached)",
        description="Run a tokenizer over every window of a prepared dataset (batched datasets.map) and save the codes "
                    "(and amplitude scale tokens) per window. Re-running with the same data and tokenizer reuses them.",
    )
    tokenize.add_argument("data", help="dataset folder written by `neurorvq prepare`")
    tokenize.add_argument("--tokenizer", default="neurorvq/tokenizer-small",
                          help="tokenizer folder or bundled name (default: %(default)s)")
    tokenize.add_argument("--output", "-o", required=True, help="code dataset folder to write")
    tokenize.add_argument("--batch-size", type=int, default=16, help="windows per map batch (default: %(default)s)")
    tokenize.set_defaults(run=_tokenize)

    train_lbm = commands.add_parser(
        "train-lbm",
        help="train a large brainwave model (GPT over codes) on a code dataset with Accelerate",
        description="Train an LBM (flattened or depth-wise layout, set in the config) on codes written by "
                    "`neurorvq tokenize`, with the same Accelerate core as the tokenizer.",
    )
    train_lbm.add_argument("--config", required=True, help="LBM config JSON (e.g. configs/lbm/small-depthwise.json)")
    train_lbm.add_argument("--data", required=True, help="code dataset folder written by `neurorvq tokenize`")
    train_lbm.add_argument("--output", "-o", required=True, help="folder for checkpoints, log.jsonl and the final model")
    train_lbm.add_argument("--init-from", default=None, help="start from this pretrained LBM")
    _add_training_options(train_lbm, learning_rate=1e-3)
    train_lbm.set_defaults(run=_train_lbm)

    evaluate_lbm = commands.add_parser(
        "evaluate-lbm",
        help="validation NLL against unigram/bigram baselines, and realism of samples against real EEG",
        description="Score an LBM (any: spatial, depth-wise or flattened) on the validation codes: bits per code and per "
                    "position (= channel-second; a spatial LBM's is its any-order upper bound) next to count models "
                    "fitted on the training codes (unigram, previous channel, previous second, their interpolation). "
                    "Then sample synthetic 10-20 EEG with the model's own sampling defaults, decode it as the pipeline "
                    "does, and run the realism report (neurorvq.lbm.realism) against the validation subjects' EEG. "
                    "How to read it: every row is 'synthetic | floor | chance or the reference's value'. The floor is "
                    "the same test with real EEG of other subjects (the training split's) in place of the samples: "
                    "new people differ from the reference too, so a figure at its floor is as close as real EEG gets. "
                    "The two-sample classifiers (band power, spatial covariance, a small convnet) score held-out "
                    "windows, 0.5 = indistinguishable, with folds grouped by subject and by draw (window-level folds "
                    "learn subjects: real vs real then reaches 0.95-1.0). Also prompt specificity and, for a "
                    "conditional model, TSTR / TRTR.",
    )
    evaluate_lbm.add_argument("model", help="LBM folder")
    evaluate_lbm.add_argument("--codes", required=True, help="code dataset folder (`neurorvq tokenize`)")
    evaluate_lbm.add_argument("--data", required=True, help="the prepared dataset the codes came from (real EEG)")
    evaluate_lbm.add_argument("--tokenizer", default=None, help="tokenizer (default: the one named in the LBM config)")
    evaluate_lbm.add_argument("--samples", type=int, default=32, help="synthetic recordings to draw (default: %(default)s)")
    evaluate_lbm.add_argument("--seconds", type=int, default=8, help="seconds per synthetic recording (default: %(default)s)")
    evaluate_lbm.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    evaluate_lbm.add_argument("--temperature", type=float, default=None,
                              help="sampling temperature (default: the model's own, as in the pipeline)")
    evaluate_lbm.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: off)")
    evaluate_lbm.add_argument("--output", default=None, help="write the metrics as JSON here")
    evaluate_lbm.add_argument("--figure", default=None, help="write the realism PNG here")
    evaluate_lbm.add_argument("--curve", default=None,
                              help="write the learning curve PNG here (needs the training run's log.jsonl in MODEL)")
    evaluate_lbm.add_argument("--guidance-scales", type=lambda text: [float(v) for v in text.split(",")], default=[1.0, 2.0],
                              help="conditional models: classifier-free guidance scales to evaluate, comma-separated "
                                   "(default: 1,2)")
    evaluate_lbm.add_argument("--condition-samples", type=int, default=16,
                              help="conditional models: synthetic recordings per condition (default: %(default)s)")
    evaluate_lbm.add_argument("--no-conditions", action="store_true",
                              help="skip the conditional evaluation (TSTR / TRTR, per-condition bands)")
    evaluate_lbm.add_argument("--overwrite", action="store_true", help="replace existing --output / --figure files")
    evaluate_lbm.set_defaults(run=_evaluate_lbm)

    generate = commands.add_parser(
        "generate",
        help="sample synthetic EEG with a large brainwave model and write it as EDF/FIF (+ a PNG)",
        description="Sample codes from an LBM (default: the bundled neurorvq/lbm-small, offline), decode them with "
                    "its NeuroRVQ tokenizer into microvolts at 200 Hz and write the recording through MNE (EDF by "
                    "the .edf extension, FIF by .fif). With --prompt, continue a real recording: the output starts "
                    "with the prompt decoded from its own codes.",
    )
    generate.add_argument("--seconds", type=_positive_int, default=30, help="seconds to generate (default: %(default)s)")
    generate.add_argument("--montage", default=None,
                          help="named montage of the channels: standard_1020 (19 channels; the default without "
                               "--channels or --prompt)")
    generate.add_argument("--channels", default=None,
                          help="comma-separated channel names instead of --montage, e.g. fp1,fp2,c3,c4,o1,o2")
    generate.add_argument("--out", "-o", required=True, help="output recording, .edf or .fif (never replaced without "
                          "--overwrite)")
    generate.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    generate.add_argument("--plot", default=None, help="write a PNG here: traces + PSD against the training PSD")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same EEG (default: %(default)s)")
    generate.add_argument("--temperature", type=float, default=None,
                          help="sampling temperature, 0 = greedy (default: the model's own: a spatial LBM's saved "
                               f"generation config, chosen by the realism report; {DEFAULT_TEMPERATURE} for others)")
    generate.add_argument("--slow-temperature", type=float, default=None,
                          help="temperature of the slow-band codes (< 8 Hz) only: lower values make channels share "
                               "more slow waveform at some cost in theta power (default: same as --temperature)")
    generate.add_argument("--stream-temperatures", type=lambda text: [float(v) for v in text.split(",")], default=None,
                          help="one temperature per code stream, comma-separated (18 for the bundled model), replacing "
                               "--temperature and the model's per-stream profile, e.g. 0.9 for all: more diverse samples")
    generate.add_argument("--condition", default=None,
                          help="brain state to generate, one the model knows (see its model card; the bundled model: "
                               "rest, arithmetic, eyes_open, eyes_closed); default: unconditional")
    generate.add_argument("--guidance-scale", type=float, default=None,
                          help="classifier-free guidance with --condition: > 1 pushes samples towards the condition "
                               "(default: the model's; 1 = plain conditional sampling)")
    generate.add_argument("--num-rounds", type=_positive_int, default=None,
                          help="spatial LBM: parallel decoding rounds per second (default: the model's)")
    generate.add_argument("--unmasking", choices=("confidence", "random"), default=None,
                          help="spatial LBM: which cells each round keeps (default: the model's)")
    generate.add_argument("--top-k", type=_positive_int, default=None, help="sample among the k most likely codes")
    generate.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    generate.add_argument("--prompt", default=None, help="recording to continue (any file MNE reads)")
    generate.add_argument("--prompt-seconds", type=_positive_int, default=None,
                          help="use only the first seconds of --prompt (default: all of it)")
    generate.add_argument("--model", default="neurorvq/lbm-small", help="LBM folder or bundled name (default: %(default)s)")
    generate.add_argument("--tokenizer", default=None, help="tokenizer (default: the one named in the LBM config)")
    generate.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    generate.set_defaults(run=_generate)

    reconstruct = commands.add_parser(
        "reconstruct",
        help="tokenize a recording and decode it back; report z-scored MSE and PCC",
        description="Preprocess a recording (any file MNE reads) with the released feature extractor, encode it "
                    "with a NeuroRVQ tokenizer, decode the codes and report the z-scored MSE and Pearson correlation "
                    "against the preprocessed input; optionally write the reconstruction (EDF/FIF) and a PNG.",
    )
    reconstruct.add_argument("recording", help="recording file")
    reconstruct.add_argument("--out", "-o", default=None, help="write the reconstruction here (.edf or .fif; never the "
                             "input, and an existing file only with --overwrite)")
    reconstruct.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    reconstruct.add_argument("--channel-names", default=None,
                             help="comma-separated labels of the columns of a .txt recording (microvolts)")
    reconstruct.add_argument("--sampling-rate", type=float, default=None,
                             help="sampling rate (Hz) of a .txt recording whose file name does not hold it")
    reconstruct.add_argument("--plot", default=None, help="write a PNG (original vs reconstruction) here")
    reconstruct.add_argument("--max-seconds", type=_positive_int, default=None, help="use only the first seconds")
    reconstruct.add_argument("--normalize-phase", action="store_true",
                             help="decode with unit phase vectors (realistic amplitude, higher MSE)")
    reconstruct.add_argument("--noise-filling", action="store_true",
                             help="mdct tokenizers: add the detail the codes did not keep as noise (real band powers, "
                                  "higher MSE)")
    reconstruct.add_argument("--tokenizer", default="neurorvq/tokenizer-small",
                             help="tokenizer folder or bundled name (default: %(default)s)")
    reconstruct.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    reconstruct.set_defaults(run=_reconstruct)

    training_psd = commands.add_parser(
        "training-psd",
        help="average PSD of a prepared dataset, the reference curve of `generate --plot`",
        description="Average the Welch PSD (µV²/Hz, 1-s windows) over all channels and windows of a prepared "
                    "split and write it as JSON (for the bundled LBM: lbm/pretrained/lbm-small/training_psd.json).",
    )
    training_psd.add_argument("--data", required=True, help="dataset folder written by `neurorvq prepare`")
    training_psd.add_argument("--output", "-o", required=True, help="JSON file to write")
    training_psd.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    training_psd.add_argument("--split", default="train", help="split to average (default: %(default)s)")
    training_psd.add_argument("--max-windows", type=_positive_int, default=None, help="use at most this many windows")
    training_psd.set_defaults(run=_training_psd)

    from neurorvq.pipelines.cli_realism import add_parser as add_realism_parser  # argparse only: no heavy import
    add_realism_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:  # the user's mistake (bad input, missing/unwritable path): one line
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"neurorvq {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
