"""Encode throughput of the official EEG v1 tokenizer: batched scales (one transformer call) vs four passes.

    python benchmarks/encode_throughput.py [--batch 8] [--channels 19] [--seconds 13] [--repeats 5]

Random weights of the released sizes (throughput does not depend on the values); codebooks are random unit
vectors so that encoding runs the full quantizer. Prints windows/s for both encoders on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from neurorvq.lbm.evaluation import STANDARD_1020
from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tokenizer" / "official-eeg-v1.json"
MONTAGE = STANDARD_1020  # 19-channel 10-20


def time_encode(model: NeuroRVQTokenizer, x: torch.Tensor, names: list[str], repeats: int) -> float:
    model.encode(x, names)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.encode(x, names)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="windows per encode call")
    parser.add_argument("--channels", type=int, default=19, help="channels per window (10-20 montage order)")
    parser.add_argument("--seconds", type=int, default=13, help="one-second patches per channel")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per encoder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(CONFIG))).eval()
    for quantizer in model.quantizers:
        for stage in quantizer.stages:
            stage.codebook.copy_(torch.nn.functional.normalize(torch.randn_like(stage.codebook), dim=-1))
            stage.initialized.fill_(1)
    names = MONTAGE[: args.channels]
    x = torch.randn(args.batch, args.channels, args.seconds * 200) * 20

    results = {}
    for label, batched in (("batched scales (1 transformer call)", True), ("four passes (released loop)", False)):
        model.encoder.transformer.batch_scales = batched
        seconds = time_encode(model, x, names, args.repeats)
        results[label] = args.batch / seconds
    model.encoder.transformer.batch_scales = True

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"window: {args.channels} channels x {args.seconds} patches = {args.channels * args.seconds} tokens, "
          f"batch {args.batch}, official EEG v1 sizes")
    for label, rate in results.items():
        print(f"{label:40s} {rate:8.2f} windows/s")
    values = list(results.values())
    print(f"speed-up of batching: {values[0] / values[1]:.2f}x")
    print(json.dumps({"windows_per_second": results}))


if __name__ == "__main__":
    main()
