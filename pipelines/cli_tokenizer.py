"""`neurorvq` commands from recordings to codes: convert-official, prepare, train-tokenizer, evaluate-tokenizer and
tokenize.

Each command is a parser function (argparse only) and a handler, set as `args.run`, that imports the tokenizer and
its data code only when the command runs. Registered in `pipelines.cli.build_parser` through `add_parsers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurorvq.pipelines.cli_common import (add_training_options, check_file, check_outputs, check_training,
                                           load_tokenizer)


def add_parsers(subparsers) -> None:
    """Add this group's subcommands to `subparsers` (of `neurorvq`'s parser), in the order `--help` lists them."""
    _add_convert_official_parser(subparsers)
    _add_prepare_parser(subparsers)
    _add_train_tokenizer_parser(subparsers)
    _add_evaluate_tokenizer_parser(subparsers)
    _add_tokenize_parser(subparsers)


# ---- convert-official -----------------------------------------------------------------------------------------


def _add_convert_official_parser(subparsers) -> None:
    convert = subparsers.add_parser(
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


def _convert_official(args: argparse.Namespace) -> int:
    from neurorvq.tokenizer.convert_official import convert_official_checkpoint

    check_file(args.checkpoint, "checkpoint", "file")
    if (Path(args.output) / "model.safetensors").exists() and not args.overwrite:
        raise FileExistsError(f"--output {args.output} already holds a model: pass --overwrite to replace it")
    folder = convert_official_checkpoint(args.checkpoint, args.output)
    print(f"wrote {folder} (load with NeuroRVQTokenizer.from_pretrained({str(folder)!r}))")
    return 0


# ---- prepare ----------------------------------------------------------------------------------------------------


def _add_prepare_parser(subparsers) -> None:
    prepare = subparsers.add_parser(
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
                              "(default: %(default)s); files with no EEG signal (annotation-only EDF such as a "
                              "hypnogram) are skipped with a warning either way")
    prepare.add_argument("--on-unknown-channel", choices=["raise", "drop"], default="drop",
                         help="channels outside the model vocabulary: error, or drop with a warning (default: %(default)s)")
    prepare.add_argument("--window-patches", type=int, default=None,
                         help="one-second patches per window (default: as many as fit in 256 tokens)")
    prepare.add_argument("--text-channel-names", default=None,
                         help="comma-separated labels of the columns of .txt recordings (without them .txt files are skipped)")
    _add_label_options(prepare)
    prepare.add_argument("--corpus-policy", default=None, metavar="FILE.json",
                         help="the corpus' reserved hold-out subjects (never prepared) and its own labels (default: the "
                              "shared corpus's, configs/corpus/shared-eeg.json, installed as "
                              "neurorvq/tokenizer/corpus/shared-eeg.json)")
    prepare.set_defaults(run=_prepare)


def _add_label_options(prepare: argparse.ArgumentParser) -> None:
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


# ---- train-tokenizer --------------------------------------------------------------------------------------------


def _add_train_tokenizer_parser(subparsers) -> None:
    train = subparsers.add_parser(
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
    add_training_options(train, learning_rate=1e-3)
    train.set_defaults(run=_train_tokenizer)


def _train_tokenizer(args: argparse.Namespace) -> int:
    from neurorvq.tokenizer.training import train_tokenizer

    model, state = train_tokenizer(args.config, args.data, check_training(args), init_from=args.init_from)
    print(f"trained {state.step} steps; model saved to {args.output}")
    return 0


# ---- evaluate-tokenizer -----------------------------------------------------------------------------------------


def _add_evaluate_tokenizer_parser(subparsers) -> None:
    evaluate = subparsers.add_parser(
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


def _evaluate_tokenizer(args: argparse.Namespace) -> int:
    import json

    from neurorvq.tokenizer.data import load_prepared
    from neurorvq.tokenizer.evaluation import evaluate_tokenizer
    from neurorvq.tokenizer.evaluation_plots import format_table, plot_evaluation

    check_outputs(args, {"--output": (args.output, "json"), "--figure": (args.figure, "figure")})
    model = load_tokenizer(args.model)
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


# ---- tokenize ---------------------------------------------------------------------------------------------------


def _add_tokenize_parser(subparsers) -> None:
    tokenize = subparsers.add_parser(
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


def _tokenize(args: argparse.Namespace) -> int:
    from neurorvq.lbm.data import tokenize_dataset

    tokenizer = load_tokenizer(args.tokenizer)
    result = tokenize_dataset(args.data, tokenizer, args.output, batch_size=args.batch_size)
    print(("reused cached codes " if result["reused_cache"] else "wrote codes ") + str(args.output))
    for split, count in result["windows"].items():
        print(f"  {split}: {count} windows")
    return 0
