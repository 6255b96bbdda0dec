"""Sampling speed and memory of the LBM on this machine.

    python benchmarks/lbm_generation_speed.py [--pipeline-seconds 30] [--breakdown-seconds 4]
                                              [--memory-seconds 60 600] [--layouts] [--seconds 4] [--model-dir DIR ...]

1. `pipeline("eeg-generation")` with the bundled models, 19-channel 10-20, `--pipeline-seconds` of EEG (model load and a
   one-second warm-up excluded): one sample, `num_samples=8`, and a condition with guidance 2. The real-time factor is
   seconds of EEG per second of wall time (> 1: faster than real time).
   Then where the time goes: milliseconds per position of each part of `generate` (`--breakdown-seconds`), and what
   the same networks cost when a second's 19 channels are sampled together (19 rows per step), the bound of a model
   factorised that way.
2. Long generations in bounded memory: for each of `--memory-seconds`, one pipeline call in a fresh process; its peak
   resident memory (`ru_maxrss`) and wall time. The context window slides, so memory should not grow with length.
3. `--layouts`: positions/s of both layouts with and without the KV cache (small configs with random weights: speed
   does not depend on the values, unless `--model-dir` folders are given). A position is one channel x one second.

Time nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from neurorvq.lbm import LBMConfig, LBMForCausalLM
from neurorvq.tokenizer.channels import STANDARD_1020

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


def pipeline_speed(seconds: int) -> list[dict]:
    import neurorvq.pipelines  # noqa: F401  registers the tasks
    from transformers import pipeline

    generator = pipeline("eeg-generation", device="cpu")
    generator(seconds=1, montage="standard_1020", seed=0)  # warm-up
    rows = []
    print(f"\n`pipeline(\"eeg-generation\")`, bundled models, {seconds} s x 19 channels, {torch.get_num_threads()} threads")
    print("| call | wall (s) | real-time factor (EEG s / wall s) | cost vs one sample |\n|---|---|---|---|")
    for name, kwargs in (("one sample", {}), ("num_samples=8", {"num_samples": 8}),
                         ("condition='rest', guidance_scale=2", {"condition": "rest", "guidance_scale": 2.0})):
        start = time.perf_counter()
        generator(seconds=seconds, montage="standard_1020", seed=0, **kwargs)
        wall = time.perf_counter() - start
        rows.append({"call": name, "wall_seconds": wall, "real_time_factor": seconds / wall})
        print(f"| {name} | {wall:.2f} | {seconds / wall:.2f} | {wall / rows[0]['wall_seconds']:.2f}x |", flush=True)
    return rows


LONG_RUN = """
import json, resource, sys, time
import neurorvq.pipelines
from transformers import pipeline
generator = pipeline("eeg-generation", device="cpu")
start = time.perf_counter()
out = generator(seconds=int(sys.argv[1]), montage="standard_1020", seed=0, progress=True)
wall = time.perf_counter() - start
print(json.dumps({"seconds": int(sys.argv[1]), "wall_seconds": wall, "samples": int(out["eeg"].shape[-1]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def long_generation_memory(lengths: list[int]) -> list[dict]:
    rows = []
    print("\nLong generations (one fresh process each; peak resident memory includes the imported libraries)")
    print("| EEG seconds | wall (s) | real-time factor | peak RSS (MB) |\n|---|---|---|---|")
    for seconds in lengths:
        done = subprocess.run([sys.executable, "-c", LONG_RUN, str(seconds)], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"| {seconds} | {row['wall_seconds']:.1f} | {seconds / row['wall_seconds']:.2f} | {row['peak_rss_mb']:.0f} |",
              flush=True)
    return rows


def time_breakdown(model: LBMForCausalLM, seconds: int) -> dict:
    """Where the sampling time of `model` (the bundled LBM) goes: wall milliseconds per position (one channel x one
    second) of each part of `generate`, timed by wrapping the model's methods for one call (restored after)."""
    from neurorvq.lbm import modeling_lbm

    spent: dict[str, float] = {}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    parts = {"main transformer step": (model, "_main"), "depth transformer steps": (model.depth_transformer, "forward"),
             "stream logits (incl. codeword scores)": (model, "_one_stream_logits"),
             "spatial context": (model, "_spatial_inputs"), "neighbour inputs": (model, "_neighbour_inputs"),
             "sampling (softmax, multinomial)": (modeling_lbm, "sample_logits")}
    generator = torch.Generator().manual_seed(0)
    model.generate(MONTAGE, num_patches=1, generator=generator)  # warm-up
    originals = {name: getattr(owner, attr) for name, (owner, attr) in parts.items()}
    for name, (owner, attr) in parts.items():
        setattr(owner, attr, timed(name, originals[name]))
    try:
        start = time.perf_counter()
        model.generate(MONTAGE, num_patches=seconds, generator=generator)
        total = time.perf_counter() - start
    finally:
        for name, (owner, attr) in parts.items():
            if owner is modeling_lbm:
                setattr(owner, attr, originals[name])
            else:
                delattr(owner, attr)  # the instance attribute hid the class's method
    positions = seconds * len(MONTAGE)
    rows = {name: 1000 * value / positions for name, value in spent.items()}
    rows["rest (bookkeeping, embeddings)"] = 1000 * total / positions - sum(rows.values())
    print(f"\nWhere sampling time goes (bundled LBM, {seconds} s x 19 channels, {torch.get_num_threads()} threads): "
          f"{1000 * total / positions:.2f} ms per position, {model.num_streams} depth steps each")
    print("| part | ms per position | share |\n|---|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.2f} | {value / (1000 * total / positions):.0%} |")
    return {"ms_per_position": 1000 * total / positions, "parts": rows}


def channel_parallel_cost(model: LBMForCausalLM, seconds: int) -> dict:
    """What sampling would cost if the channels of a second were sampled together (a model factorised that way):
    `model`'s networks (the bundled LBM's) sampling 19 one-channel rows per step, `seconds` long, against its own 19
    channels in sequence. Same layers, widths and depth steps; only the number of sequential steps differs (codes
    not used)."""
    generator = torch.Generator().manual_seed(0)
    model.generate(["cz"], num_patches=1, batch_size=len(MONTAGE), generator=generator)  # warm-up
    start = time.perf_counter()
    model.generate(["cz"], num_patches=seconds, batch_size=len(MONTAGE), generator=generator)
    parallel = time.perf_counter() - start
    start = time.perf_counter()
    model.generate(MONTAGE, num_patches=seconds, generator=generator)
    sequential = time.perf_counter() - start
    print(f"\nSampling {seconds} s of 19 channels with the bundled LBM's networks (decode excluded): channels in sequence "
          f"(the model) {sequential:.2f} s = {seconds / sequential:.1f}x real time; 19 rows per step (the cost of a "
          f"model that samples a second's channels together) {parallel:.2f} s = {seconds / parallel:.1f}x real time")
    return {"sequential_seconds": sequential, "parallel_seconds": parallel,
            "sequential_real_time_factor": seconds / sequential, "parallel_real_time_factor": seconds / parallel}


def layouts(seconds: int, uncached_seconds: int, model_dirs: list[str] | None) -> list[dict]:
    torch.manual_seed(0)
    if model_dirs:
        models = {Path(d).name: LBMForCausalLM.from_pretrained(d) for d in model_dirs}
    else:
        models = {name: LBMForCausalLM(LBMConfig.from_json_file(str(CONFIGS / f"{name}.json")))
                  for name in ("small-depthwise", "small-flattened")}
    rows = []
    print(f"\n{torch.get_num_threads()} threads, 19-channel 10-20 montage")
    print("| model | layout | cache | positions/s | real-time factor |\n|---|---|---|---|---|")
    for name, model in models.items():
        model.eval()
        for use_cache in (True, False):
            result = measure(model, seconds if use_cache else uncached_seconds, use_cache)
            rows.append({"model": name, "layout": model.config.layout, "cache": use_cache, **result})
            print(f"| {name} | {model.config.layout} | {'yes' if use_cache else 'no'} | "
                  f"{result['positions_per_second']:.1f} | {result['real_time_factor']:.3f} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-seconds", type=int, default=30, help="EEG seconds per timed pipeline call (0: skip)")
    parser.add_argument("--memory-seconds", type=int, nargs="*", default=[60, 600],
                        help="lengths of the long generations (none: skip)")
    parser.add_argument("--breakdown-seconds", type=int, default=4,
                        help="EEG seconds of the per-part timing of the bundled LBM's sampling (0: skip)")
    parser.add_argument("--layouts", action="store_true", help="also time both layouts, with and without the cache")
    parser.add_argument("--seconds", type=int, default=4, help="--layouts: seconds of EEG per timed generation")
    parser.add_argument("--uncached-seconds", type=int, default=2, help="--layouts: seconds for the uncached runs")
    parser.add_argument("--model-dir", nargs="*", default=None, help="--layouts: trained LBM folders")
    args = parser.parse_args()
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with torch.no_grad():
        if args.pipeline_seconds:
            results["pipeline"] = pipeline_speed(args.pipeline_seconds)
        if args.breakdown_seconds or args.pipeline_seconds:
            bundled = LBMForCausalLM.from_pretrained("neurorvq/lbm-small-depthwise").eval()
        if args.breakdown_seconds:
            results["breakdown"] = time_breakdown(bundled, args.breakdown_seconds)
        if args.pipeline_seconds:
            results["channel_parallel_cost"] = channel_parallel_cost(bundled, args.pipeline_seconds)
        if args.memory_seconds:
            results["long_generations"] = long_generation_memory(args.memory_seconds)
        if args.layouts:
            results["layouts"] = layouts(args.seconds, args.uncached_seconds, args.model_dir)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
