"""The `neurorvq` command line: one entry point, one subcommand per job.

The commands live in one module per group, each with `add_parsers(subparsers)` (argparse only) and a handler per
command that `main` calls as `args.run(args)`:
    cli_tokenizer   convert-official, prepare, train-tokenizer, evaluate-tokenizer, tokenize
    cli_lbm         train-lbm, evaluate-lbm
    cli_recordings  generate, reconstruct, training-psd
    cli_realism     realism
    cli_common      what they share: boundary checks, model loading, argparse types, training options
"""

from __future__ import annotations

import argparse
import sys

from neurorvq.pipelines import cli_lbm, cli_realism, cli_recordings, cli_tokenizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurorvq",
        description="NeuroRVQ EEG tokenizer and large brainwave models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (cli_tokenizer, cli_lbm, cli_recordings, cli_realism):  # the order `neurorvq --help` lists them
        group.add_parsers(commands)
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
