"""Tokenize a recording with the bundled NeuroRVQ tokenizer and decode it back.

    python examples/tokenize_and_reconstruct.py recording.edf --seconds 20

Prints the code tensor shape and the reconstruction's z-scored MSE and Pearson correlation.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import pipeline  # noqa: E402

import neurorvq.pipelines  # noqa: E402,F401  registers "eeg-tokenization", "eeg-reconstruction"
from neurorvq.tokenizer import NeuroRVQTokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recording", help="any file MNE reads")
    parser.add_argument("--seconds", type=int, default=None, help="use only the first seconds")
    args = parser.parse_args()

    model = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small")
    tokens = pipeline("eeg-tokenization", model=model, device="cpu")(args.recording, max_seconds=args.seconds)
    print(f"codes {tuple(tokens['codes'].shape)} [batch, scale, stage, channel, second]; "
          f"scale codes {tuple(tokens['scale_codes'].shape)}; channels {tokens['channel_names']}")
    rec = pipeline("eeg-reconstruction", model=model, device="cpu")(args.recording, max_seconds=args.seconds)
    print(f"reconstruction {rec['reconstruction'].shape} µV: z-scored MSE {rec['zscored_mse']:.3f}, "
          f"PCC {rec['pcc']:.3f}")


if __name__ == "__main__":
    main()
