"""Sample synthetic EEG with the bundled large brainwave model through `transformers.pipeline`.

    python examples/quickstart.py --seconds 10 --out synth.fif

Prints the shape (channels x samples, µV at 200 Hz) and writes an MNE FIF/EDF file when --out is given.
"""

import argparse
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import pipeline  # noqa: E402

import neurorvq.pipelines  # noqa: E402,F401  registers "eeg-generation"
from neurorvq.pipelines._eeg import save_raw  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="seconds to generate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument("--out", default=None, help="optional .edf / .fif output")
    args = parser.parse_args()

    generator = pipeline("eeg-generation", device="cpu")  # the bundled neurorvq/lbm-small + tokenizer
    out = generator(seconds=args.seconds, montage="standard_1020", seed=args.seed, return_raw=True)
    eeg = out["eeg"]  # [19, seconds * 200] µV
    print(f"generated {eeg.shape[0]} channels x {eeg.shape[1]} samples at {out['sampling_rate']} Hz; "
          f"median channel std {float(np.median(eeg.std(axis=1))):.1f} µV; channels {out['channel_names']}")
    if args.out:
        print(f"wrote {save_raw(out['raw'], args.out)}")


if __name__ == "__main__":
    main()
