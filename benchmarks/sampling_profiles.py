"""Realism of an LBM's samples under per-stream sampling profiles: how `stream_temperature_scales` were chosen.

    python benchmarks/sampling_profiles.py --data PREPARED [--model neurorvq/lbm-small-depthwise] [--samples 64] [--seconds 8]
        [--profiles 0.9/0.9/0.9 0.8/0.5/0.6 ...] [--seed 0]

A profile is `codes/gains/top`: the temperature of every code stream, of the two gain tokens, and of the highest
band's codes (an mdct tokenizer's fastest band, 30-100 Hz for the bundled one). Each profile samples `--samples`
recordings of `--seconds` in the most common montage of the validation split, decodes them with noise filling (and
the first profile also without), and compares them with as many real validation windows (first `--seconds`, same
montage): two-sample classifier accuracy (0.5 = indistinguishable), seam ratio, largest band power difference, mean
|inter-channel r| and channel std ratio, as `neurorvq evaluate-lbm` reports them.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from neurorvq.lbm import LBMForCausalLM
from neurorvq.lbm.evaluation import _window_signal
from neurorvq.lbm.realism_metrics import mean_abs_correlation
from neurorvq.lbm.realism_pooled import pooled_realism as realism_report
from neurorvq.pipelines.eeg_generation import load_eeg_tokenizer
from neurorvq.tokenizer.data import load_prepared


def stream_temperatures(model, codes: float, gains: float, top: float) -> list[float]:
    """Per-stream temperatures of a `codes/gains/top` profile (layout order)."""
    layout = model.code_layout
    top_band = f"s{layout.num_scales - 1}k"
    return [gains if name.startswith("scale") else top if name.startswith(top_band) else codes
            for name in layout.stream_names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared dataset (`neurorvq prepare`); its validation split")
    parser.add_argument("--model", default="neurorvq/lbm-small-depthwise")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profiles", nargs="+", default=["0.9/0.9/0.9", "0.8/0.5/0.8", "0.8/0.5/0.6", "0.8/0.5/1.0",
                                                          "0.85/0.55/0.64", "0.9/0.63/0.675"])
    args = parser.parse_args()
    model = LBMForCausalLM.from_pretrained(args.model).eval()
    tokenizer = load_eeg_tokenizer(None, model.config.tokenizer_name_or_path)
    rows = load_prepared(args.data, "validation")
    length = args.seconds * 200
    montage = Counter(tuple(r["channel_names"]) for r in rows).most_common(1)[0][0]
    real = [x[:, :length] for x in (_window_signal(r) for r in rows if tuple(r["channel_names"]) == montage)
            if x.shape[-1] >= length][: args.samples]
    print(f"{len(real)} real windows ({len(montage)} channels), {args.samples} samples x {args.seconds} s per profile")
    print("| sampling (codes / gains / top band) | decoding | classifier | seam ratio | largest band difference (dB) "
          f"| mean abs r (real {np.nanmean([mean_abs_correlation(x) for x in real]):.2f}) | std ratio |")
    print("|---|---|---|---|---|---|---|")
    runs = [(args.profiles[0], False)] + [(profile, True) for profile in args.profiles]
    with torch.no_grad():
        for profile, noise in runs:
            temperatures = stream_temperatures(model, *map(float, profile.split("/")))
            out = model.generate(list(montage), num_patches=args.seconds, batch_size=args.samples,
                                 generator=torch.Generator().manual_seed(args.seed), stream_temperatures=temperatures)
            eeg = tokenizer.decode(out["codes"], list(montage), scale_codes=out["scale_codes"], noise_filling=noise,
                                   generator=torch.Generator().manual_seed(args.seed + 1)).numpy()
            report = realism_report(list(eeg), real, seed=args.seed)
            worst = max(abs(v["difference_db"]) for v in report["bands"].values())
            classifier = report["classifier"]
            print(f"| {profile} | {'noise filling' if noise else 'plain'} | {classifier['accuracy']:.2f} ± "
                  f"{classifier['accuracy_std']:.2f} | {report['seam']['synthetic']:.2f} | {worst:.1f} | "
                  f"{report['correlation']['synthetic']:.2f} | {report['amplitude']['ratio']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
