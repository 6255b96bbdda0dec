"""Official vs improved quantizer kinds: same data, same steps, same seed; validation fidelity of each.

    python benchmarks/quantizer_ablation.py --data PREPARED --output runs/ablation [--steps 400]

Trains configs/tokenizer/small-released.json (the released design) four times, switching `quantizer_type` (official | standard, the latter with
dead-code restart) and `amplitude_side_information` (window_statistics | scale_tokens), then evaluates each on the
validation split (z-scored MSE, PCC, band NMSE, codebook usage) and prints a markdown table. Runs one variant per
invocation with --only NAME (to spread them over processes), or all in sequence.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from neurorvq.tokenizer import NeuroRVQConfig
from neurorvq.tokenizer.data import load_prepared
from neurorvq.tokenizer.evaluation import evaluate_tokenizer
from neurorvq.tokenizer.trainer import TrainingArguments
from neurorvq.tokenizer.training import train_tokenizer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tokenizer" / "small-released.json"
VARIANTS = {
    "official": ("official", "window_statistics"),
    "official-scale": ("official", "scale_tokens"),
    "standard": ("standard", "window_statistics"),
    "standard-scale": ("standard", "scale_tokens"),
}


def run(name: str, data: str, output: Path, steps: int) -> dict:
    quantizer, side = VARIANTS[name]
    config = NeuroRVQConfig.from_json_file(str(CONFIG))
    config.quantizer_type, config.amplitude_side_information = quantizer, side
    config.dead_code_threshold = 0.05 if quantizer == "standard" else 0.0
    args = TrainingArguments(output_dir=str(output / name), max_steps=steps, batch_size=8, warmup_steps=steps // 10,
                             learning_rate=1e-3, save_steps=steps, eval_steps=steps, logging_steps=20, progress=False)
    model, _ = train_tokenizer(config, data, args, eval_batches=None)
    results = evaluate_tokenizer(model.eval(), load_prepared(data, "validation"), progress=False)
    (output / f"eval-{name}.json").write_text(json.dumps(results, indent=1))
    return results


def table(output: Path) -> str:
    lines = ["| quantizer | side information | bits/ch-s | val z-MSE | val PCC | mean usage | mean perplexity |",
             "|---|---|---|---|---|---|---|"]
    for name, (quantizer, side) in VARIANTS.items():
        path = output / f"eval-{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        usage = torch.tensor(r["codebook_usage"]).mean().item()
        perplexity = torch.tensor(r["codebook_perplexity"]).mean().item()
        lines.append(f"| {quantizer} | {side} | {r['bits_per_channel_second']:.1f} | {r['zscored_mse']:.3f} | "
                     f"{r['pcc']:.3f} | {usage:.3f} | {perplexity:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared dataset (neurorvq prepare)")
    parser.add_argument("--output", required=True, help="folder for the four runs and their metrics")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per variant (default: %(default)s)")
    parser.add_argument("--only", choices=sorted(VARIANTS), default=None, help="run a single variant")
    args = parser.parse_args()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    for name in [args.only] if args.only else VARIANTS:
        run(name, args.data, output, args.steps)
    print(table(output))


if __name__ == "__main__":
    main()
