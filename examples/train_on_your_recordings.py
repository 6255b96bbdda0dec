"""Train a tokenizer and an LBM on your own folder of recordings, then sample from them.

    python examples/train_on_your_recordings.py my_recordings/ --output runs/mine \
        --tokenizer-steps 2000 --lbm-steps 500

Every step is the library's (the same as `neurorvq prepare / train-tokenizer / tokenize / train-lbm`): the folder is
preprocessed into a windowed dataset split by subject, a tokenizer is trained with Accelerate, the windows are
tokenized, an LBM is trained on the codes, and 4 s of EEG on the recordings' own channels is sampled and decoded.
"""

import argparse
from pathlib import Path

import torch

from neurorvq.lbm import LBMConfig, LBMForCausalLM
from neurorvq.lbm.data import tokenize_dataset
from neurorvq.lbm.training import train_lbm
from neurorvq.tokenizer import NeuroRVQConfig
from neurorvq.tokenizer.data import load_prepared, prepare_dataset
from neurorvq.tokenizer.training import TrainingArguments, train_tokenizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", nargs="+", help="recording files or folders (anything MNE reads)")
    parser.add_argument("--output", required=True, help="folder for the datasets and both models")
    parser.add_argument("--tokenizer-config", default=str(CONFIGS / "tokenizer" / "small.json"))
    parser.add_argument("--lbm-config", default=str(CONFIGS / "lbm" / "small-depthwise.json"),
                        help="LBM sizes; its code layout is taken from the trained tokenizer")
    parser.add_argument("--tokenizer-steps", type=int, default=2000)
    parser.add_argument("--lbm-steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    out = Path(args.output)

    report = prepare_dataset(args.recordings, out / "data", on_error="skip")
    print(f"prepared {report.windows} windows; skipped {len(report.skipped)} files")

    steps = dict(batch_size=args.batch_size, warmup_steps=0, progress=False, logging_steps=1)
    tokenizer_config = NeuroRVQConfig.from_json_file(args.tokenizer_config)
    if tokenizer_config.amplitude_side_information != "scale_tokens":  # scale tokens: LBM samples then decode from codes alone
        tokenizer_config.amplitude_side_information = "scale_tokens"
    tokenizer, _ = train_tokenizer(tokenizer_config, out / "data",
                                   TrainingArguments(output_dir=str(out / "tokenizer"), max_steps=args.tokenizer_steps,
                                                     save_steps=args.tokenizer_steps, eval_steps=args.tokenizer_steps, **steps))
    tokenizer.eval()
    tokenize_dataset(out / "data", tokenizer, out / "codes")

    sizes = LBMConfig.from_json_file(args.lbm_config).to_diff_dict()
    keep = ("layout", "hidden_size", "num_layers", "num_heads", "mlp_ratio", "max_positions", "max_patches",
            "depth_hidden_size", "depth_layers", "depth_heads")
    config = LBMConfig.from_tokenizer_config(tokenizer.config, tokenizer_name_or_path=str(out / "tokenizer"),
                                             **{k: sizes[k] for k in keep if k in sizes})
    lbm, state = train_lbm(config, out / "codes",
                           TrainingArguments(output_dir=str(out / "lbm"), max_steps=args.lbm_steps,
                                             save_steps=args.lbm_steps, eval_steps=args.lbm_steps, **steps))
    print(f"LBM validation: {[r for r in state.history if 'eval/bits_per_code' in r][-1:]}")

    names = list(load_prepared(out / "data", "train")[0]["channel_names"])
    lbm = LBMForCausalLM.from_pretrained(out / "lbm").eval()
    sample = lbm.generate(names, num_patches=4, temperature=0.7, generator=torch.Generator().manual_seed(0))
    eeg = tokenizer.decode(sample["codes"], names, scale_codes=sample["scale_codes"], normalize_phase=True,
                           noise_filling=True)  # realistic amplitude and band powers, whichever design
    print(f"sampled {tuple(eeg.shape[1:])} (channels x samples, µV at 200 Hz) on {names}")


if __name__ == "__main__":
    main()
