"""`neurorvq` commands that write recordings through the Hugging Face pipelines: generate (an LBM's synthetic EEG),
reconstruct (a recording through a tokenizer and back) and training-psd (the reference curve of `generate --plot`).

Each command is a parser function (argparse only) and a handler, set as `args.run`, that imports transformers,
MNE and the models only when the command runs. Registered in `pipelines.cli.build_parser` through `add_parsers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurorvq.pipelines.cli_common import (check_device, check_file, check_outputs, float_list, load_lbm,
                                           load_tokenizer, positive_int)


def add_parsers(subparsers) -> None:
    """Add this group's subcommands to `subparsers` (of `neurorvq`'s parser), in the order `--help` lists them."""
    _add_generate_parser(subparsers)
    _add_reconstruct_parser(subparsers)
    _add_training_psd_parser(subparsers)


# ---- generate ---------------------------------------------------------------------------------------------------


def _add_generate_parser(subparsers) -> None:
    generate = subparsers.add_parser(
        "generate",
        help="sample synthetic EEG with a large brainwave model and write it as EDF/FIF (+ a PNG)",
        description="Sample codes from an LBM (default: the bundled neurorvq/lbm-small, offline), decode them with "
                    "its NeuroRVQ tokenizer into microvolts at 200 Hz and write the recording through MNE (EDF by "
                    "the .edf extension, FIF by .fif). With --prompt, continue a real recording: the output starts "
                    "with the prompt decoded from its own codes.",
    )
    generate.add_argument("--seconds", type=positive_int, default=30, help="seconds to generate (default: %(default)s)")
    generate.add_argument("--montage", default=None,
                          help="named montage of the channels: standard_1020 (19 channels; the default without "
                               "--channels or --prompt)")
    generate.add_argument("--channels", default=None,
                          help="comma-separated channel names instead of --montage, e.g. fp1,fp2,c3,c4,o1,o2")
    generate.add_argument("--out", "-o", required=True, help="output recording, .edf or .fif (never replaced without "
                          "--overwrite)")
    generate.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    generate.add_argument("--plot", default=None, help="write a PNG here: traces + PSD against the training PSD")
    _add_sampling_options(generate)
    generate.add_argument("--prompt", default=None, help="recording to continue (any file MNE reads)")
    generate.add_argument("--prompt-seconds", type=positive_int, default=None,
                          help="use only the first seconds of --prompt (default: all of it)")
    generate.add_argument("--model", default="neurorvq/lbm-small", help="LBM folder or bundled name (default: %(default)s)")
    generate.add_argument("--tokenizer", default=None, help="tokenizer (default: the one named in the LBM config)")
    generate.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    generate.set_defaults(run=_generate)


def _add_sampling_options(generate: argparse.ArgumentParser) -> None:
    from neurorvq.lbm.sampling import DEFAULT_TEMPERATURE  # the help text names it

    generate.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same EEG (default: %(default)s)")
    generate.add_argument("--temperature", type=float, default=None,
                          help="sampling temperature, 0 = greedy (default: the model's own: a spatial LBM's saved "
                               f"generation config, chosen by the realism report; {DEFAULT_TEMPERATURE} for others)")
    generate.add_argument("--slow-temperature", type=float, default=None,
                          help="temperature of the slow-band codes (< 8 Hz) only: lower values make channels share "
                               "more slow waveform at some cost in theta power (default: same as --temperature)")
    generate.add_argument("--stream-temperatures", type=float_list, default=None,
                          help="one temperature per code stream, comma-separated (18 for the bundled model), replacing "
                               "--temperature and the model's per-stream profile, e.g. 0.9 for all: more diverse samples")
    generate.add_argument("--condition", default=None,
                          help="brain state to generate, one the model knows (see its model card; the bundled model: "
                               "rest, arithmetic, eyes_open, eyes_closed); default: unconditional")
    generate.add_argument("--guidance-scale", type=float, default=None,
                          help="classifier-free guidance with --condition: > 1 pushes samples towards the condition "
                               "(default: the model's; 1 = plain conditional sampling)")
    generate.add_argument("--num-rounds", type=positive_int, default=None,
                          help="spatial LBM: parallel decoding rounds per second (default: the model's)")
    generate.add_argument("--unmasking", choices=("confidence", "random", "spread"), default=None,
                          help="spatial LBM: which cells each round keeps (default: the model's)")
    generate.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely codes")
    generate.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")


def _generate(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline

    from neurorvq.lbm.sampling import check_sampling_controls
    from neurorvq.pipelines._eeg import resolve_channels, save_raw
    from neurorvq.pipelines.plotting import TRAINING_PSD, load_training_psd, plot_recording

    if args.channels and args.montage:
        raise ValueError("pass --channels or --montage, not both")
    check_outputs(args, {"--out": (args.out, "recording"), "--plot": (args.plot, "figure")},
                  inputs=[args.prompt] if args.prompt else [])
    if args.prompt:
        check_file(args.prompt, "--prompt", "recording")
    check_device(args.device)
    check_sampling_controls(1.0 if args.temperature is None else args.temperature, args.top_k, args.top_p)
    channels = resolve_channels(args.channels, args.montage if (args.channels or args.prompt) else
                                (args.montage or "standard_1020"))
    model = load_lbm(args.model)
    tokenizer = load_tokenizer(args.tokenizer or model.config.tokenizer_name_or_path)
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


# ---- reconstruct ------------------------------------------------------------------------------------------------


def _add_reconstruct_parser(subparsers) -> None:
    reconstruct = subparsers.add_parser(
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
    reconstruct.add_argument("--max-seconds", type=positive_int, default=None, help="use only the first seconds")
    reconstruct.add_argument("--normalize-phase", action="store_true",
                             help="decode with unit phase vectors (realistic amplitude, higher MSE)")
    reconstruct.add_argument("--noise-filling", action="store_true",
                             help="mdct tokenizers: add the detail the codes did not keep as noise (real band powers, "
                                  "higher MSE)")
    reconstruct.add_argument("--tokenizer", default="neurorvq/tokenizer-small",
                             help="tokenizer folder or bundled name (default: %(default)s)")
    reconstruct.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    reconstruct.set_defaults(run=_reconstruct)


def _reconstruct(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline

    from neurorvq.pipelines._eeg import save_raw
    from neurorvq.pipelines.plotting import plot_recording

    check_file(args.recording, "recording", "file")
    check_outputs(args, {"--out": (args.out, "recording"), "--plot": (args.plot, "figure")},
                  inputs=[args.recording])
    check_device(args.device)
    text = Path(args.recording).suffix.lower() == ".txt"
    if text and not args.channel_names:
        raise ValueError(f"{args.recording} is a text file of microvolt columns: pass --channel-names (and "
                         "--sampling-rate unless the file name holds it, e.g. _200Hz)")
    model = load_tokenizer(args.tokenizer)
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


# ---- training-psd -----------------------------------------------------------------------------------------------


def _add_training_psd_parser(subparsers) -> None:
    training_psd = subparsers.add_parser(
        "training-psd",
        help="average PSD of a prepared dataset, the reference curve of `generate --plot`",
        description="Average the Welch PSD (µV²/Hz, 1-s windows) over all channels and windows of a prepared "
                    "split and write it as JSON (for the bundled LBM: lbm/pretrained/lbm-small/training_psd.json).",
    )
    training_psd.add_argument("--data", required=True, help="dataset folder written by `neurorvq prepare`")
    training_psd.add_argument("--output", "-o", required=True, help="JSON file to write")
    training_psd.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    training_psd.add_argument("--split", default="train", help="split to average (default: %(default)s)")
    training_psd.add_argument("--max-windows", type=positive_int, default=None, help="use at most this many windows")
    training_psd.set_defaults(run=_training_psd)


def _training_psd(args: argparse.Namespace) -> int:
    from neurorvq.pipelines.plotting import compute_training_psd

    check_outputs(args, {"--output": (args.output, "json")})
    print(f"wrote {compute_training_psd(args.data, args.output, split=args.split, max_windows=args.max_windows)}")
    return 0
