"""`neurorvq realism`: how far is one set of EEG recordings (synthetic) from another (real)? Offline, CPU.

Registered in `pipelines.cli.build_parser` through `add_parsers`; the work is `neurorvq.lbm.realism`.
"""

from __future__ import annotations

import argparse

HOW_TO_READ = """\
how to read the numbers:
  Every row of report.md reads: synthetic | floor | chance (or the reference's own value).
  - synthetic: SYNTHETIC measured against REAL (the reference).
  - floor: the same measurement with real EEG of other subjects in place of SYNTHETIC: --other-real against REAL,
    or, without --other-real, half of REAL's subjects against the other half (random halves, --repeats times; the
    synthetic set is then compared with one half, the same amount of real data). New people differ from the
    reference too; a synthetic value at its floor is as close to REAL as real EEG of new subjects is.
  - chance: 0.5 for the classifiers (classes are balanced). A two-sample classifier (C2ST) is trained to tell
    SYNTHETIC windows from REAL windows and scored on held-out windows: 0.5 = indistinguishable, 1 = always told
    apart. Read each accuracy beside its floor, not beside 0.5: with few subjects the floor is above chance.
  - grouped folds: each fold holds out whole subjects (REAL, grouped by --group-pattern or by file; a prepared
    dataset by subject) and whole draws (SYNTHETIC, grouped by file). With window-level folds a subject's windows
    sit on both sides of the split and a classifier recognises subjects, not realism: real vs real of different
    subjects then reaches 0.95-1.0.
  Classifiers: bandpower (per-channel log band powers + pair correlations, logistic regression), covariance
  (pyriemann tangent space of the OAS spatial covariance, 1-40 Hz and per band), learned (a small ShallowConvNet-
  style network on the raw windows). Descriptive rows: band power difference (dB), topography r and largest
  channel difference, correlation-matrix error, between/within-window spread ratios, spectral slope, seam ratio.

examples:
  neurorvq realism samples/ data/prepared --split validation --output realism/
  neurorvq realism generated/ eegmat/ --group-pattern 'Subject\\d+' --other-real more_eeg/ -o realism/
"""


def add_parsers(subparsers) -> argparse.ArgumentParser:
    """Add the `realism` subcommand to `subparsers` (of `neurorvq`'s parser)."""
    parser = subparsers.add_parser(
        "realism",
        help="two-sample tests (grouped folds) and descriptive figures of synthetic vs real EEG, each beside its "
             "real-vs-real floor",
        description="Compare two sets of EEG: SYNTHETIC (any generator's output) against REAL. Each set is recordings "
                    "MNE reads (files or folders of .edf/.bdf/.fif/.set/...) or a prepared dataset folder (`neurorvq "
                    "prepare`, with --split). Writes report.json, report.md (a markdown table) and figures "
                    "(c2st.png, topomaps.png, correlation.png, spectra.png) to --output.",
        epilog=HOW_TO_READ, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("synthetic", metavar="SYNTHETIC",
                        help="synthetic EEG: a recording file, a folder of them (each file is one draw) or a prepared "
                             "dataset folder")
    parser.add_argument("real", metavar="REAL",
                        help="the reference real EEG: a recording file, a folder of them or a prepared dataset folder")
    parser.add_argument("--other-real", default=None,
                        help="real EEG of other subjects than REAL, for the floor (default: half of REAL's subjects "
                             "against the other half)")
    parser.add_argument("--split", default="validation",
                        help="split of a prepared dataset given as SYNTHETIC or REAL (default: %(default)s)")
    parser.add_argument("--other-split", default="train",
                        help="split of a prepared dataset given as --other-real; its subjects found in REAL are "
                             "left out (default: %(default)s)")
    parser.add_argument("--output", "-o", required=True, help="folder for report.json, report.md and the figures")
    parser.add_argument("--overwrite", action="store_true", help="replace report files already in --output")
    parser.add_argument("--channels", default=None,
                        help="comma-separated channels to compare, e.g. fp1,fp2,c3,c4 (default: the first recording's "
                             "EEG channels, or a prepared dataset's most common montage)")
    parser.add_argument("--sampling-rate", type=float, default=200.0,
                        help="every set is resampled to this rate, Hz (default: %(default)s)")
    parser.add_argument("--group-pattern", default=None,
                        help="regular expression on file names giving a recording's subject, e.g. 'Subject\\d+' "
                             "(default: every file its own group)")
    parser.add_argument("--window-seconds", type=float, default=4.0,
                        help="length of the windows every item is cut into (default: %(default)s)")
    parser.add_argument("--classifiers", default="bandpower,covariance,learned",
                        help="comma-separated two-sample classifiers (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeated group splits / subsamples; numbers are mean ± std (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=5, help="grouped folds per classifier (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits and classifiers (default: %(default)s)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the sets, make the report, write it and print the table."""
    from pathlib import Path

    from neurorvq.lbm.realism import REPORT_FILES, format_report, load_eeg, realism_report, write_report

    out = Path(args.output)
    existing = [str(out / name) for name in REPORT_FILES if (out / name).exists()]
    if existing and not args.overwrite:  # before any work
        raise FileExistsError(f"--output {out} already holds {', '.join(existing)}: pass --overwrite to replace them")
    channels = [n.strip().lower() for n in args.channels.split(",") if n.strip()] if args.channels else None
    classifiers = [c.strip() for c in args.classifiers.split(",") if c.strip()]
    common = {"sampling_rate": args.sampling_rate, "group_pattern": args.group_pattern}
    real = load_eeg(args.real, channels, split=args.split, **common)
    synthetic = load_eeg(args.synthetic, real.channel_names, split=args.split, sampling_rate=args.sampling_rate)
    synthetic_groups = [f"synthetic/{g}" for g in synthetic.groups]  # one group per file (draw); never a real id
    other = None
    if args.other_real:
        other = load_eeg(args.other_real, real.channel_names, split=args.other_split, **common)
        keep = [i for i, g in enumerate(other.groups) if g not in set(real.groups)]
        other.signals, other.groups = [other.signals[i] for i in keep], [other.groups[i] for i in keep]
    print(f"realism: {len(synthetic)} synthetic items vs {len(real)} real items ({len(set(real.groups))} groups)"
          + (f", floor from {len(other)} items of {len(set(other.groups))} other groups" if other else
             ", floor from halves of the real groups") + f"; {len(real.channel_names)} channels", flush=True)
    report = realism_report(synthetic.signals, real.signals, real.channel_names, args.sampling_rate,
                            synthetic_groups=synthetic_groups, real_groups=real.groups,
                            other_real=other.signals if other else None,
                            other_real_groups=other.groups if other else None,
                            window_seconds=args.window_seconds, repeats=args.repeats, folds=args.folds, seed=args.seed,
                            classifiers=classifiers)
    paths = write_report(report, out, overwrite=args.overwrite)
    print(format_report(report))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
