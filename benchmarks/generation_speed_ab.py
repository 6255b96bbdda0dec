"""Generation speed of LBMs side by side, in one run: `pipeline("eeg-generation")` real-time factors.

    python benchmarks/generation_speed_ab.py [--models neurorvq/lbm-small neurorvq/lbm-small-depthwise]
                                             [--seconds 30] [--repeats 2]

For each model (any LBM folder or bundled name), with the bundled tokenizer decoding: 30 s (`--seconds`) of the
19-channel 10-20 montage, one sample; the same with `num_samples=8`; 64 channels (the EEGMMIDB 10-10 set), one sample.
Model load and a 2-s warm-up are excluded; the models are timed in alternation, `--repeats` times each, so that
this VM's drift (up to 1.7x within an hour) falls on all of them alike. The real-time factor is seconds of EEG per
second of wall time. Time nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from neurorvq.tokenizer.channels import STANDARD_1020
from neurorvq.lbm.training import load_lbm

# the 64 channels of EEGMMIDB (BCI2000 10-10), in the channel vocabulary's names
MONTAGE_64 = ("fc5,fc3,fc1,fcz,fc2,fc4,fc6,c5,c3,c1,cz,c2,c4,c6,cp5,cp3,cp1,cpz,cp2,cp4,cp6,fp1,fpz,fp2,af7,af3,afz,af4,"
              "af8,f7,f5,f3,f1,fz,f2,f4,f6,f8,ft7,ft8,t7,t8,t9,t10,tp7,tp8,p7,p5,p3,p1,pz,p2,p4,p6,p8,po7,po3,poz,po4,"
              "po8,o1,oz,o2,iz").split(",")
CASES = {"19 ch": (STANDARD_1020, 1), "19 ch x 8 samples": (STANDARD_1020, 8), "64 ch": (MONTAGE_64, 1)}


def main() -> None:
    import neurorvq.pipelines  # noqa: F401  (registers the task)
    from transformers import pipeline

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["neurorvq/lbm-small", "neurorvq/lbm-small-depthwise"])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    generators = {name: pipeline("eeg-generation", model=load_lbm(name).eval()) for name in args.models}
    for generator in generators.values():  # warm-up
        generator(seconds=2, channel_names=list(STANDARD_1020), seed=0)
    times = {(name, case): [] for name in generators for case in CASES}
    for repeat in range(args.repeats):
        for case, (channels, samples) in CASES.items():
            for name, generator in generators.items():
                start = time.perf_counter()
                generator(seconds=args.seconds, channel_names=list(channels), num_samples=samples, seed=repeat)
                times[name, case].append(time.perf_counter() - start)
    print(f"{torch.get_num_threads()} threads; {args.seconds} s of EEG per call; best of {args.repeats} "
          "(all runs in brackets); real-time factor = EEG seconds / wall seconds")
    print("| model | " + " | ".join(CASES) + " | 8 samples / 1 |")
    print("|---|" + "---|" * (len(CASES) + 1))
    results = {}
    for name in generators:
        cells, row = [], {}
        for case in CASES:
            best = min(times[name, case])
            row[case] = {"seconds": times[name, case], "real_time_factor": args.seconds / best}
            cells.append(f"{args.seconds / best:.1f}x ({', '.join(f'{t:.2f}' for t in times[name, case])} s)")
        ratio = min(times[name, "19 ch x 8 samples"]) / min(times[name, "19 ch"])
        row["eight_over_one"] = ratio
        results[name] = row
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
