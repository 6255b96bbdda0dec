"""Sampling speed of the LBM on this machine: positions/s and real-time factor, both layouts, with/without KV cache.

    python benchmarks/lbm_generation_speed.py [--seconds 4] [--model-dir DIR ...]

A position is one channel x one second of EEG (all its S x K codes and scale tokens). The real-time factor is
seconds of 19-channel EEG generated per second of wall time (> 1: faster than real time). Uses the small configs
(random weights: speed does not depend on the values) unless trained model folders are given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from neurorvq.lbm.evaluation import STANDARD_1020
from neurorvq.lbm import LBMConfig, LBMForCausalLM

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "lbm"
MONTAGE = STANDARD_1020  # 19-channel 10-20


def measure(model: LBMForCausalLM, seconds: int, use_cache: bool) -> dict:
    generator = torch.Generator().manual_seed(0)
    model.generate(MONTAGE, num_patches=1, generator=generator, use_cache=use_cache)  # warm-up
    start = time.perf_counter()
    model.generate(MONTAGE, num_patches=seconds, generator=generator, use_cache=use_cache)
    wall = time.perf_counter() - start
    positions = seconds * len(MONTAGE)
    return {"positions_per_second": positions / wall, "real_time_factor": seconds / wall, "wall_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=4, help="seconds of EEG per timed generation")
    parser.add_argument("--uncached-seconds", type=int, default=2, help="seconds for the (slow) uncached runs")
    parser.add_argument("--model-dir", nargs="*", default=None, help="trained LBM folders (default: small configs)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model_dir:
        models = {Path(d).name: LBMForCausalLM.from_pretrained(d) for d in args.model_dir}
    else:
        models = {name: LBMForCausalLM(LBMConfig.from_json_file(str(CONFIGS / f"{name}.json")))
                  for name in ("small-depthwise", "small-flattened")}
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 19-channel 10-20 montage")
    print("| model | layout | cache | positions/s | real-time factor |\n|---|---|---|---|---|")
    for name, model in models.items():
        model.eval()
        for use_cache in (True, False):
            seconds = args.seconds if use_cache else args.uncached_seconds
            result = measure(model, seconds, use_cache)
            rows.append({"model": name, "layout": model.config.layout, "cache": use_cache, **result})
            print(f"| {name} | {model.config.layout} | {'yes' if use_cache else 'no'} | "
                  f"{result['positions_per_second']:.1f} | {result['real_time_factor']:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
