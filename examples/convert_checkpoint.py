"""Convert a released NeuroRVQ tokenizer checkpoint and tokenize a random signal with it.

    python examples/convert_checkpoint.py official_state_dict.safetensors --output converted/

Same as `neurorvq convert-official CHECKPOINT --output DIR`, then `NeuroRVQTokenizer.from_pretrained(DIR)`.
"""

import argparse

import torch

from neurorvq.tokenizer import NeuroRVQTokenizer, convert_official_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="released state dict (.safetensors, .pt, .pth)")
    parser.add_argument("--output", default="converted-neurorvq", help="folder to write (default: %(default)s)")
    args = parser.parse_args()

    folder = convert_official_checkpoint(args.checkpoint, args.output)
    model = NeuroRVQTokenizer.from_pretrained(folder).eval()
    channels = ["fp1", "fp2", "c3", "c4"]
    eeg = 20 * torch.randn(1, len(channels), 2 * model.config.patch_size, generator=torch.Generator().manual_seed(0))
    codes = model.encode(eeg, channels).codes  # [1, S, K, 4, 2]
    print(f"converted to {folder}: {sum(p.numel() for p in model.parameters())} parameters; "
          f"codes of a 2-s test signal {tuple(codes.shape)}")


if __name__ == "__main__":
    main()
