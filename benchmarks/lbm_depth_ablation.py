"""Why the depth-wise LBM sat at the unigram: short training runs of the small config with and without the fix.

    python benchmarks/lbm_depth_ablation.py --codes CODES --tokenizer neurorvq/tokenizer-small [--steps 160]

Same codes, seed, batches and optimizer (AdamW, lr 1.5e-3, 30 warm-up steps, batch 8) for every variant; prints the
training bits per code, averaged over every 20 steps:

- `before`: depth code embeddings at std 0.02 (the GPT-2 default) and no neighbour inputs (the previous design);
- `visible-embeddings`: depth code embeddings at std d^-1/2, no neighbour inputs;
- `neighbours` (the shipped design): d^-1/2 embeddings + each stream's codes at the previous channel and previous
  second through identity-initialised maps.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from neurorvq.lbm import LBMConfig, LBMForCausalLM
from neurorvq.lbm.data import code_loader, load_codes
from neurorvq.tokenizer import NeuroRVQTokenizer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lbm" / "small-depthwise.json"
VARIANTS = ("before", "visible-embeddings", "neighbours")


def run(variant: str, codes: str, tokenizer: NeuroRVQTokenizer, steps: int) -> list[float]:
    values = json.loads(CONFIG.read_text())
    values.pop("model_type")
    values["depth_neighbours"] = variant == "neighbours"
    torch.manual_seed(0)
    model = LBMForCausalLM(LBMConfig(**values))
    model.init_code_embeddings(tokenizer)
    if variant == "before":
        with torch.no_grad():
            model.depth_embed.weight.mul_(values["initializer_range"] * math.sqrt(values["depth_hidden_size"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-3, weight_decay=0.0)
    loader = code_loader(load_codes(codes, "train"), 8, shuffle=True, seed=0, max_positions=model.config.max_positions,
                         max_patches=model.config.max_patches)
    bits, step, started = [], 0, time.perf_counter()
    model.train()
    while step < steps:
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = 1.5e-3 * min(1.0, (step + 1) / 30)
            loss = model(batch["positions"], batch["channel_ids"], batch["time_ids"], labels=True,
                         position_mask=batch["position_mask"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            optimizer.step()
            optimizer.zero_grad()
            bits.append(loss.item() / math.log(2))
            step += 1
            if step % 20 == 0:
                print(f"{variant}: step {step}, bits/code {sum(bits[-20:]) / 20:.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            if step >= steps:
                break
    return bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", required=True, help="code dataset (neurorvq tokenize)")
    parser.add_argument("--tokenizer", default="neurorvq/tokenizer-small", help="the tokenizer of the codes")
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--only", choices=VARIANTS, default=None)
    args = parser.parse_args()
    tokenizer = NeuroRVQTokenizer.from_pretrained(args.tokenizer)
    for variant in [args.only] if args.only else VARIANTS:
        run(variant, args.codes, tokenizer, args.steps)


if __name__ == "__main__":
    main()
