"""`neurorvq` commands that train and score a large brainwave model on codes: train-lbm and evaluate-lbm.

Each command is a parser function (argparse only) and a handler, set as `args.run`, that imports the LBM code only
when the command runs. Registered in `pipelines.cli.build_parser` through `add_parsers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurorvq.pipelines.cli_common import (add_training_options, check_outputs, check_training, float_list, load_lbm,
                                           load_tokenizer)


def add_parsers(subparsers) -> None:
    """Add this group's subcommands to `subparsers` (of `neurorvq`'s parser), in the order `--help` lists them."""
    _add_train_lbm_parser(subparsers)
    _add_evaluate_lbm_parser(subparsers)


# ---- train-lbm --------------------------------------------------------------------------------------------------


def _add_train_lbm_parser(subparsers) -> None:
    train_lbm = subparsers.add_parser(
        "train-lbm",
        help="train a large brainwave model (GPT over codes) on a code dataset with Accelerate",
        description="Train an LBM (flattened, depth-wise or spatial layout, set in the config) on codes written by "
                    "`neurorvq tokenize`, with the same Accelerate core as the tokenizer.",
    )
    train_lbm.add_argument("--config", required=True, help="LBM config JSON (e.g. configs/lbm/small-depthwise.json)")
    train_lbm.add_argument("--data", required=True, help="code dataset folder written by `neurorvq tokenize`")
    train_lbm.add_argument("--output", "-o", required=True, help="folder for checkpoints, log.jsonl and the final model")
    train_lbm.add_argument("--init-from", default=None, help="start from this pretrained LBM")
    add_training_options(train_lbm, learning_rate=1e-3)
    train_lbm.set_defaults(run=_train_lbm)


def _train_lbm(args: argparse.Namespace) -> int:
    from neurorvq.lbm.training import train_lbm

    model, state = train_lbm(args.config, args.data, check_training(args), init_from=args.init_from)
    print(f"trained {state.step} steps; model saved to {args.output}")
    return 0


# ---- evaluate-lbm -----------------------------------------------------------------------------------------------


_EVALUATE_LBM_DESCRIPTION = (
    "Score an LBM (any: spatial, depth-wise or flattened) on the validation codes: bits per code and per "
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
    "conditional model, TSTR / TRTR."
)


def _add_evaluate_lbm_parser(subparsers) -> None:
    evaluate_lbm = subparsers.add_parser(
        "evaluate-lbm",
        help="validation NLL against unigram/bigram baselines, and realism of samples against real EEG",
        description=_EVALUATE_LBM_DESCRIPTION,
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
    evaluate_lbm.add_argument("--guidance-scales", type=float_list, default=[1.0, 2.0],
                              help="conditional models: classifier-free guidance scales to evaluate, comma-separated "
                                   "(default: 1,2)")
    evaluate_lbm.add_argument("--condition-samples", type=int, default=16,
                              help="conditional models: synthetic recordings per condition (default: %(default)s)")
    evaluate_lbm.add_argument("--no-conditions", action="store_true",
                              help="skip the conditional evaluation (TSTR / TRTR, per-condition bands)")
    evaluate_lbm.add_argument("--overwrite", action="store_true", help="replace existing --output / --figure files")
    evaluate_lbm.set_defaults(run=_evaluate_lbm)


def _evaluate_lbm(args: argparse.Namespace) -> int:
    import json

    from neurorvq.lbm.data import load_codes
    from neurorvq.lbm.evaluation import evaluate_lbm, format_nll, format_realism, plot_learning_curve
    from neurorvq.tokenizer.data import load_prepared

    check_outputs(args, {"--output": (args.output, "json"), "--figure": (args.figure, "figure"),
                         "--curve": (args.curve, "figure")})
    log = Path(args.model) / "log.jsonl"
    if args.curve and not log.is_file():
        raise ValueError(f"--curve reads the training log, but {log} does not exist: pass the training run's folder")
    model = load_lbm(args.model).eval()
    tokenizer = load_tokenizer(args.tokenizer or model.config.tokenizer_name_or_path).eval()
    validation_codes = load_codes(args.codes, "validation")
    results = evaluate_lbm(model, tokenizer, load_codes(args.codes, "train"), validation_codes,
                           load_prepared(args.data, "validation"), num_samples=args.samples, seconds=args.seconds,
                           seed=args.seed, temperature=args.temperature, top_p=args.top_p, figure=args.figure,
                           train_rows=load_prepared(args.data, "train"))
    print(format_nll(results))
    print(format_realism(results["realism"]))
    if model.config.condition_names and not args.no_conditions:
        from neurorvq.lbm.condition_evaluation import (condition_likelihoods, condition_report,
                                                       format_condition_report)

        results["condition_likelihood"] = condition_likelihoods(model, validation_codes)
        for row in results["condition_likelihood"]:
            print(f"conditional likelihood, {' vs '.join(row['classes'])}: AUC {row.get('auc', float('nan')):.3f}, "
                  f"balanced accuracy {row['balanced_accuracy']:.3f} (chance {row['chance']:.2f}; "
                  f"{sum(row['n_windows'].values())} windows of {row['n_subjects']} subjects)")
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
