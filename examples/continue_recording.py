"""Continue a real recording with the bundled large brainwave model.

    python examples/continue_recording.py recording.edf --prompt-seconds 4 --seconds 6 --out continued.fif

The first --prompt-seconds of the output are the recording decoded from its own codes; the rest is sampled.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import pipeline  # noqa: E402

import neurorvq.pipelines  # noqa: E402,F401
from neurorvq.pipelines._eeg import save_raw  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recording", help="recording to continue (any file MNE reads)")
    parser.add_argument("--prompt-seconds", type=int, default=4, help="seconds of the recording used (default: %(default)s)")
    parser.add_argument("--seconds", type=int, default=6, help="seconds to generate after it (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument("--out", default=None, help="optional .edf / .fif output")
    args = parser.parse_args()

    generator = pipeline("eeg-generation", device="cpu")
    out = generator(args.recording, prompt_seconds=args.prompt_seconds, seconds=args.seconds, seed=args.seed,
                    return_raw=True)
    print(f"{len(out['channel_names'])} channels x {out['eeg'].shape[1] / out['sampling_rate']:g} s "
          f"(prompt {out['prompt_seconds']} s + generated {args.seconds} s)")
    if args.out:
        print(f"wrote {save_raw(out['raw'], args.out)}")


if __name__ == "__main__":
    main()
