"""What noise filling changes in an mdct tokenizer's decoding, on real EEG of validation subjects.

    python benchmarks/noise_filling.py --data PREPARED [--split validation] [--tokenizer neurorvq/tokenizer-small]
                                       [--max-windows 64] [--seed 0]

Every window (its whole real patches) is encoded and decoded twice: the default, MSE-optimal decoding and
`decode(noise_filling=True)`. Printed for each, against the inputs: z-scored MSE, band power differences in dB (the
`evaluate-lbm` bands), the spectral slope difference, the median channel std ratio, the seam ratio, and the
two-sample classifier accuracy (reconstructions against their own inputs, `evaluate-lbm`'s features; 0.5 =
indistinguishable). The inputs' own seam ratio and a 0.5 classifier are the baselines.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from neurorvq.lbm.realism_pooled import pooled_realism as realism_report
from neurorvq.tokenizer import NeuroRVQTokenizer
from neurorvq.tokenizer.data import load_prepared
from neurorvq.tokenizer.metrics import zscored_mse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared dataset (`neurorvq prepare`)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--tokenizer", default="neurorvq/tokenizer-small")
    parser.add_argument("--max-windows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = NeuroRVQTokenizer.from_pretrained(args.tokenizer).eval()
    if tokenizer.config.noise_filling_levels is None:
        raise SystemExit(f"{args.tokenizer} has no fitted noise_filling_levels (an mdct tokenizer fitted by "
                         "`neurorvq train-tokenizer` has them)")
    rows = load_prepared(args.data, args.split)
    patch = tokenizer.config.patch_size
    inputs, default, filled = [], [], []
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for row in rows.select(range(min(args.max_windows, len(rows)))):
            length = int(row["valid_samples"]) // patch * patch
            if length == 0:
                continue
            x = torch.as_tensor(np.asarray(row["input_values"], dtype=np.float32)[:, :length])[None]
            names = list(row["channel_names"])
            encoded = tokenizer.encode(x, names)
            decode = lambda **kw: tokenizer.decode(encoded.codes, names, scale_codes=encoded.scale_codes, **kw)[0].numpy()  # noqa: E731
            inputs.append(x[0].numpy())
            default.append(decode())
            filled.append(decode(noise_filling=True, generator=generator))
    print(f"{len(inputs)} windows of {args.data} ({args.split}), {sum(x.shape[0] * x.shape[1] for x in inputs) / 200:.0f} "
          f"channel-seconds; tokenizer {args.tokenizer}")
    print("| decoding | z-scored MSE | delta / theta / alpha / beta / gamma (dB vs input) | slope diff | std ratio "
          "| seam ratio (input) | classifier vs inputs |")
    print("|---|---|---|---|---|---|---|")
    for name, outputs in (("default", default), ("noise_filling=True", filled)):
        report = realism_report(outputs, inputs, seed=args.seed)
        mse = np.mean([zscored_mse(x, y) for x, y in zip(inputs, outputs)])
        bands = " / ".join(f"{v['difference_db']:+.2f}" for v in report["bands"].values())
        slope = report["slope"]["synthetic_mean"] - report["slope"]["real_mean"]
        classifier = report["classifier"]
        print(f"| {name} | {mse:.4f} | {bands} | {slope:+.2f} | {report['amplitude']['ratio']:.3f} | "
              f"{report['seam']['synthetic']:.2f} ({report['seam']['real']:.2f}) | "
              f"{classifier['accuracy']:.3f} ± {classifier['accuracy_std']:.3f} |")


if __name__ == "__main__":
    main()
