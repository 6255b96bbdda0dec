"""The `neurorvq` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys


def _convert_official(args: argparse.Namespace) -> int:
    from neurorvq.tokenizer.convert_official import convert_official_checkpoint

    folder = convert_official_checkpoint(args.checkpoint, args.output)
    print(f"wrote {folder} (load with NeuroRVQTokenizer.from_pretrained({str(folder)!r}))")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    convert.set_defaults(run=_convert_official)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:  # bad input: say what is wrong, no traceback
        print(f"neurorvq {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
