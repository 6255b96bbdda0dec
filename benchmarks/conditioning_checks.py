"""Two checks of an LBM's conditioning and prompting that one seed or one sample set cannot settle.

    python benchmarks/conditioning_checks.py --data <prepared> --codes <codes> [--models neurorvq/lbm-small ...]
                                             [--seeds 8]

For each model (a folder or bundled name; its saved sampling defaults):
- conditional likelihood, rest vs arithmetic (`lbm.condition_evaluation.condition_likelihood`): each within-subject
  window of the validation and of the training codes scored under both conditions; AUC and balanced accuracy beside
  chance (0.5). A model whose likelihood does not know the state cannot sample states apart;
- prompt specificity (`lbm.evaluation.prompt_specificity`, one prompt per validation recording, 4 s continued by 4 s)
  over `--seeds` seeds: its mean, range and join figures. One seed's figure moves by up to +-0.08 on 10 prompts.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from neurorvq.lbm.condition_evaluation import condition_likelihood
from neurorvq.lbm.data import load_codes
from neurorvq.lbm.evaluation import prompt_specificity
from neurorvq.lbm.training import load_lbm
from neurorvq.tokenizer import NeuroRVQTokenizer
from neurorvq.tokenizer.data import load_prepared


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared dataset (`neurorvq prepare`)")
    parser.add_argument("--codes", required=True, help="its codes (`neurorvq tokenize`)")
    parser.add_argument("--models", nargs="+", default=["neurorvq/lbm-small"])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    tokenizer = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small").eval()
    rows = load_prepared(args.data, "validation")
    codes = {split: load_codes(args.codes, split) for split in ("validation", "train")}
    results = {}
    for name in args.models:
        model = load_lbm(name).eval()
        result = results[name] = {}
        if model.config.condition_names:
            for split, dataset in codes.items():
                likelihood = condition_likelihood(model, dataset, ("rest", "arithmetic"))
                result[f"condition_likelihood/{split}"] = likelihood
                print(f"{name}: conditional likelihood on {split} ({sum(likelihood['n_windows'].values())} windows, "
                      f"{likelihood['n_subjects']} subjects): AUC {likelihood['auc']:.3f}, balanced accuracy "
                      f"{likelihood['balanced_accuracy']:.3f} (chance 0.5)")
        draws = [prompt_specificity(model, tokenizer, rows, seed=seed) for seed in range(args.seeds)]
        specificity = [d["specificity"] for d in draws]
        result["prompt_specificity"] = {"draws": draws, "mean": float(np.mean(specificity))}
        print(f"{name}: prompt specificity over {args.seeds} seeds {np.mean(specificity):.3f} "
              f"(range {min(specificity):.2f}-{max(specificity):.2f}; chance 0.5), join ratio "
              f"{np.mean([d['join_ratio'] for d in draws]):.2f}, joins above 3x "
              f"{np.mean([d['join_jumps'] for d in draws]):.0%} ({draws[0]['num_prompts']} prompts)")
    if args.output:
        with open(args.output, "x") as handle:  # never replaces an earlier run's figures
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
