"""Token designs at equal rate (160 bits per channel-second): validation fidelity of each, next to the DCT codec.

    python benchmarks/token_design_ablation.py --data PREPARED --output runs/design-ablation \
        [--only NAME] [--baseline MODEL_FOLDER ...]

Every variant is an mdct tokenizer (configs/tokenizer/small-codebooks.json with other bands / stages) whose codebooks
are fitted by k-means on the train split (`train_tokenizer`, seed 0); `--baseline` adds already trained models (the
released design, a refined model). Each is scored by `evaluate_tokenizer` on the validation subjects: z-scored MSE,
amplitude ratio, seam ratio, band NMSE, bits, and the DCT codec at the same rate. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer
from neurorvq.tokenizer.data import load_prepared
from neurorvq.tokenizer.evaluation import evaluate_tokenizer
from neurorvq.tokenizer.metrics import BANDS
from neurorvq.tokenizer.trainer import TrainingArguments
from neurorvq.tokenizer.training import train_tokenizer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tokenizer" / "small-codebooks.json"
# name -> (band edges in MDCT bins of 0.5 Hz, stages per band); every variant spends 16 codes of 9 bits
VARIANTS = {
    "4 bands x 4 stages (0-8-16-30-100 Hz)": ([0, 16, 32, 60, 200], 4),
    "4 bands x 4 stages (0-6-12-24-100 Hz)": ([0, 12, 24, 48, 200], 4),
    "8 bands x 2 stages (gamma 24-100 Hz)": ([0, 4, 8, 12, 16, 24, 32, 48, 200], 2),
    "8 bands x 2 stages (gamma 30-100 Hz, bundled)": ([0, 4, 8, 12, 16, 24, 36, 60, 200], 2),
}


def fit(name: str, data: str, output: Path) -> NeuroRVQTokenizer:
    edges, stages = VARIANTS[name]
    config = NeuroRVQConfig.from_json_file(str(CONFIG))
    config.band_edges, config.num_quantizers = edges, stages
    folder = output / ("mdct-" + "-".join(map(str, edges)) + f"-k{stages}")
    model, _ = train_tokenizer(config, data, TrainingArguments(output_dir=str(folder), overwrite=True, progress=False))
    return model


def row(name: str, result: dict) -> str:
    bands = " | ".join(f"{result['band_nmse'][b]:.3f}" for b in BANDS)
    return (f"| {name} | {result['bits_per_channel_second']:.0f} | {result['zscored_mse']:.4f} | "
            f"{result['amplitude_ratio']:.3f} | {result['seam_ratio']:.2f} | {bands} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared dataset (neurorvq prepare)")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--only", default=None, choices=list(VARIANTS), help="run one variant")
    parser.add_argument("--baseline", nargs="*", default=[], help="trained model folders to score beside them")
    args = parser.parse_args()
    validation = load_prepared(args.data, "validation")
    header = "| design | bits/ch-s | z-MSE | amplitude ratio | seam ratio | " + " | ".join(f"{b} NMSE" for b in BANDS) + " |"
    lines = [header, "|" + "---|" * (5 + len(BANDS))]
    results = {}
    models = [(folder, NeuroRVQTokenizer.from_pretrained(folder)) for folder in args.baseline]
    models += [(name, fit(name, args.data, args.output)) for name in ([args.only] if args.only else VARIANTS)]
    for name, model in models:
        result = evaluate_tokenizer(model, validation, progress=False)
        results[str(name)] = result
        lines.append(row(str(name), result))
        print(lines[-1], flush=True)
    dct = next(iter(results.values()))["dct"]
    lines.append(row("DCT + ideal entropy coder", dct))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
