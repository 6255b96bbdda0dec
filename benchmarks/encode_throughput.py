"""Encode throughput: the released EEG v1 sizes against the released code, the matmul peak of this machine, and the
bundled mdct tokenizer.

    python benchmarks/encode_throughput.py [--windows 32] [--batch-size 8] [--threads N] [--channels 19] [--seconds 13]
                                           [--clock wall|cpu] [--eeg FILES...] [--tokenize-data DIR] [--skip-released]

One run prints:
- the measured fp32 and bf16 matmul peak (a large square matmul, best of a few);
- the released EEG v1 sizes (4 scales x 8 stages x 8192 codes of 128, 12-layer encoder; random weights and unit
  random codebooks: throughput does not depend on the values): windows/s, GFLOP/s (search matmuls + encoder,
  counted below) and the fraction of the fp32 peak, for this package's encode (`search_precision="exact"`),
  for a re-implementation of the released code (one transformer pass per scale, the released nearest-codeword
  search written out: an [N, K] distance matrix, argmin) with the speed-up and whether the codes are identical,
  and for the opt-in `search_precision="bf16-rescore"` with its code agreement (on the benchmark windows and on
  real EEG windows when `--eeg` files exist);
- the bundled mdct tokenizer (`neurorvq/tokenizer-small`): encode and decode windows/s and channel-seconds/s;
- `datasets` tokenization (`neurorvq tokenize` of the `--tokenize-data` recordings, prepared first, untimed) with the
  bundled tokenizer: windows/s and EEG channel-hours per minute.

Windows are 10-20 montage channels x one-second patches, random-walk EEG in microvolts; `--windows` of them are
timed in batches of `--batch-size` after one warm-up batch. Keep the machine otherwise idle: the peak and the
throughputs are measured one after the other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer
from neurorvq.tokenizer.channels import STANDARD_1020
from neurorvq.tokenizer.data import synthetic_eeg
from neurorvq.tokenizer.quantization import reference_nearest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_memory import RESERVED, channel_hours  # noqa: E402  (a sibling benchmark)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tokenizer" / "official-eeg-v1.json"
SHARED = Path(os.environ.get("NEURORVQ_SHARED", ROOT.parent / "shared"))
DEFAULT_EEG = [SHARED / "data" / "eeg" / "eegmat" / f"Subject0{i}_2.edf" for i in range(3)]


# ---- FLOP counts (multiply-adds count 2) ---------------------------------------------------------------


def encoder_flops(config: NeuroRVQConfig, channels: int, patches: int) -> float:
    """Released design, one window: convolution branches, the transformer on every scale, the code projections."""
    tokens = channels * patches
    flops = 0.0
    for kernels in config.conv_kernel_sizes:  # per token: conv -> pool along the patch
        length, in_channels = config.patch_size, 1
        for kernel, pool in zip(kernels, config.conv_pool_sizes):
            flops += 2 * tokens * config.conv_channels * in_channels * kernel * length
            length, in_channels = length // pool, config.conv_channels
    dim, hidden, n = config.hidden_size, int(config.hidden_size * config.mlp_ratio), tokens + 1  # + CLS
    per_layer = 2 * n * (4 * dim * dim + 2 * dim * hidden) + 4 * n * n * dim  # qkv, proj, MLP; q.k and a.v
    flops += config.num_scales * config.encoder_layers * per_layer
    flops += config.num_scales * 2 * tokens * (dim * dim + dim * config.code_dim)
    return flops


def search_flops(config: NeuroRVQConfig, tokens: int, widths: list[int]) -> float:
    """The nearest-codeword matrix products: 2 * tokens * codebook_size * width per stage and scale (or band)."""
    return sum(2.0 * tokens * config.codebook_size * width * config.num_quantizers for width in widths)


# ---- timing -------------------------------------------------------------------------------------------


CLOCK = time.perf_counter  # --clock cpu: process CPU time (with --threads 1, robust to other processes' load)


def matmul_peak(dtype: torch.dtype, size: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = CLOCK()
        torch.mm(a, b)
        best = min(best, CLOCK() - start)
    return 2 * size ** 3 / best / 1e9


def throughput(fn, batches: list[torch.Tensor]) -> float:
    """Windows per second of `fn(batch)` over all batches, after one warm-up call."""
    fn(batches[0])
    start = CLOCK()
    for batch in batches:
        fn(batch)
    return sum(b.shape[0] for b in batches) / (CLOCK() - start)


# ---- the released code, re-implemented ------------------------------------------------------------------


@torch.no_grad()
def released_encode(model: NeuroRVQTokenizer, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    """The released encode: spectrum statistics, the encoder with one transformer pass per scale, and per scale
    and stage: l2-normalise the residual, the [N, K] distance matrix |z|^2 + |w|^2 - 2 z.w, argmin, subtract the
    codeword. Returns codes [B, S, K, C, A]."""
    batch, channels, samples = x.shape
    patches = samples // model.config.patch_size
    transformer = model.encoder.transformer
    transformer.sequences_per_pass = batch  # one pass per scale
    try:
        model._spectrum_statistics(x.reshape(batch, channels * patches, -1), None)
        latents = model.encoder(x, model.channel_indices(names, batch, channels), None)  # [S, B, N, D]
    finally:
        transformer.sequences_per_pass = None
    codes = []
    for s, quantizer in enumerate(model.quantizers):
        residual, scale_codes = latents[s].reshape(-1, latents.shape[-1]).float(), []
        for stage in quantizer.stages:
            indices = reference_nearest(F.normalize(residual, dim=-1), stage.codebook)
            residual = residual - stage.codebook[indices]
            scale_codes.append(indices)
        codes.append(torch.stack(scale_codes).reshape(-1, batch, channels, patches))
    return torch.stack(codes).permute(2, 0, 1, 3, 4)


def exact_fallback_fraction(model: NeuroRVQTokenizer, rows: int) -> float:
    """bf16-rescore: fraction of the rows of the last encode that were searched exactly (not provably settled)."""
    stages = [stage for quantizer in model.quantizers for stage in quantizer.stages]
    return sum(stage.fallback_rows for stage in stages) / (rows * len(stages))


def real_windows(files: list[Path], patches: int, limit: int) -> tuple[torch.Tensor, list[str]] | None:
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    from neurorvq.tokenizer import NeuroRVQFeatureExtractor

    features = NeuroRVQFeatureExtractor()([str(f) for f in files], return_tensors="pt", window_patches=patches)
    keep = features["padding_mask"].bool().all(dim=(1, 2))  # whole windows only
    return features["input_values"][keep][:limit], features["channel_names"]


# ---- main -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=32, help="windows timed per measurement")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per encode call")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--channels", type=int, default=19, help="channels per window (10-20 montage order)")
    parser.add_argument("--seconds", type=int, default=13, help="one-second patches per channel")
    parser.add_argument("--eeg", nargs="*", type=Path, default=DEFAULT_EEG,
                        help="EEG files for the bf16-rescore agreement on real windows (missing files are skipped)")
    parser.add_argument("--tokenize-data", type=Path, default=SHARED / "data" / "eeg" / "eegmat",
                        help="folder of EDF recordings for the `datasets` tokenization throughput (reserved subjects "
                             "skipped; a missing folder skips it)")
    parser.add_argument("--skip-released", action="store_true", help="do not time the released-code reference")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (default), or this process's CPU time: with --threads 1 a fair comparison "
                             "on a machine that other processes keep busy")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = STANDARD_1020[: args.channels]
    num_batches = max(1, math.ceil(args.windows / args.batch_size))
    x = synthetic_eeg(num_batches * args.batch_size, args.channels, args.seconds)
    batches = list(x.split(args.batch_size))
    tokens = args.channels * args.seconds
    results: dict = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "channels": args.channels, "seconds": args.seconds,
                     "batch_size": args.batch_size, "windows": len(x)}

    results["clock"] = args.clock
    print(f"machine: {results['machine']}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.clock} clock; "
          f"windows of {args.channels} channels x {args.seconds} s ({tokens} tokens), batch {args.batch_size}, "
          f"{len(x)} windows timed per row")
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    results["peak_gflops"] = {"fp32": peak32, "bf16": peak16}
    print(f"matmul peak (4096^2, best of 3): fp32 {peak32:7.1f} GFLOP/s, bf16 {peak16:7.1f} GFLOP/s "
          f"({peak16 / peak32:.1f}x)")

    # ---- released EEG v1 sizes ----
    config = NeuroRVQConfig.from_json_file(str(CONFIG))
    model = NeuroRVQTokenizer(config).eval()
    with torch.no_grad():
        for quantizer in model.quantizers:
            for stage in quantizer.stages:
                stage.codebook.copy_(F.normalize(torch.randn_like(stage.codebook), dim=-1))
                stage.initialized.fill_(1)
    enc, search = encoder_flops(config, args.channels, args.seconds), search_flops(config, tokens, [config.code_dim] * config.num_scales)
    per_window = enc + search
    print(f"\nreleased EEG v1 sizes: {per_window / 1e9:.1f} GFLOP per window = search matmuls "
          f"{search / 1e9:.1f} ({config.num_scales} x {config.num_quantizers} stages x {config.codebook_size} codes "
          f"x {config.code_dim}) + encoder {enc / 1e9:.1f}")

    def row(label: str, rate: float, extra: str = "") -> dict:
        gflops = rate * per_window / 1e9
        print(f"  {label:34s} {rate:7.2f} windows/s {gflops:7.1f} GFLOP/s {gflops / peak32:6.1%} of fp32 peak{extra}")
        return {"windows_per_second": rate, "gflops": gflops, "fraction_of_fp32_peak": gflops / peak32}

    exact_rate = throughput(lambda b: model.encode(b, names), batches)
    results["eeg_v1_exact"] = row("encode (exact, default)", exact_rate)
    channel_indices = model.channel_indices(names, args.batch_size, args.channels)
    with torch.no_grad():
        encoder_rate = throughput(lambda b: model.encoder(b, channel_indices[: b.shape[0]], None), batches)
    rest = max(1e-9, 1 / exact_rate - 1 / encoder_rate)  # seconds per window outside the encoder network
    results["eeg_v1_exact"].update(encoder_gflops=encoder_rate * enc / 1e9, search_gflops=search / rest / 1e9)
    print(f"    of which the encoder network {encoder_rate * enc / 1e9:7.1f} GFLOP/s "
          f"({encoder_rate * enc / 1e9 / peak32:.1%} of peak, {1 / encoder_rate / (1 / exact_rate):.0%} of the time); "
          f"the rest (search + quantizer) {search / rest / 1e9:7.1f} GFLOP/s ({search / rest / 1e9 / peak32:.1%})")
    rescore_rate = throughput(lambda b: model.encode(b, names, search_precision="bf16-rescore"), batches)
    exact_codes = torch.cat([model.encode(b, names).codes for b in batches])
    rescored = [model.encode(b, names, search_precision="bf16-rescore").codes for b in batches]
    agreement = float((torch.cat(rescored) == exact_codes).float().mean())
    fallback = exact_fallback_fraction(model, batches[-1].shape[0] * tokens)
    if not args.skip_released:
        released_rate = throughput(lambda b: released_encode(model, b, names), batches)
        released_codes = torch.cat([released_encode(model, b, names) for b in batches])
        same = bool(torch.equal(released_codes, exact_codes))
        results["eeg_v1_released_reference"] = row("released code (re-implemented)", released_rate)
        results["eeg_v1_exact"].update(speedup=exact_rate / released_rate, codes_identical_to_released=same)
        print(f"  exact encode vs released code: {exact_rate / released_rate:.2f}x, codes identical: {same}")
    results["eeg_v1_bf16_rescore"] = row("encode (bf16-rescore, opt-in)", rescore_rate,
                                         f", codes identical to exact: {agreement:.6%}")
    results["eeg_v1_bf16_rescore"].update(agreement=agreement, rows_searched_exactly=fallback)
    print(f"  bf16-rescore rows searched exactly (not provably settled by bf16 + rescoring): {fallback:.2%}")
    if not args.skip_released:
        results["eeg_v1_bf16_rescore"]["speedup"] = rescore_rate / released_rate
        print(f"  bf16-rescore vs released code: {rescore_rate / released_rate:.2f}x, vs exact: "
              f"{rescore_rate / exact_rate:.2f}x")
    outputs = iter([model.encode(b, names) for b in batches] * 2)

    def decode_released(_):
        e = next(outputs)
        return model.decode(e.codes, names, e.log_amplitude_mean, e.log_amplitude_std)

    decode_rate = throughput(decode_released, batches)
    results["eeg_v1_decode_windows_per_second"] = decode_rate
    print(f"  decode {decode_rate:32.2f} windows/s {decode_rate * args.channels * args.seconds:9.0f} channel-s/s")
    real = real_windows(args.eeg, args.seconds, limit=4 * args.batch_size) if args.eeg else None
    if real is not None and real[0].shape[0]:
        eeg, eeg_names = real
        exact_real = torch.cat([model.encode(b, eeg_names).codes for b in eeg.split(args.batch_size)])
        rescored_real = torch.cat([model.encode(b, eeg_names, search_precision="bf16-rescore").codes
                                   for b in eeg.split(args.batch_size)])
        real_agreement = float((rescored_real == exact_real).float().mean())
        real_fallback = exact_fallback_fraction(model, eeg.split(args.batch_size)[-1].shape[0] * eeg.shape[1]
                                                * args.seconds)
        results["eeg_v1_bf16_rescore"].update(agreement_real_eeg=real_agreement,
                                              rows_searched_exactly_real_eeg=real_fallback)
        print(f"  bf16-rescore agreement on {eeg.shape[0]} real EEG windows ({exact_real.numel()} codes): "
              f"{real_agreement:.6%} ({real_fallback:.2%} of rows searched exactly)")

    # ---- bundled mdct tokenizer ----
    small = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small").eval()
    edges = small.config.band_edges
    widths = [high - low for low, high in itertools.pairwise(edges)]
    patch = small.config.patch_size
    mdct_flops = search_flops(small.config, tokens, widths) + 2.0 * tokens * 2 * patch * patch  # + the MDCT
    encoded = [small.encode(b, names) for b in batches]
    encode_rate = throughput(lambda b: small.encode(b, names), batches)
    pairs = iter(encoded * 2)

    def decode(_):
        e = next(pairs)
        return small.decode(e.codes, names, scale_codes=e.scale_codes)

    decode_rate = throughput(decode, batches)
    seconds_per_window = args.channels * args.seconds
    results["tokenizer_small_mdct"] = {
        "encode_windows_per_second": encode_rate, "encode_channel_seconds_per_second": encode_rate * seconds_per_window,
        "encode_gflops": encode_rate * mdct_flops / 1e9, "decode_windows_per_second": decode_rate,
        "decode_channel_seconds_per_second": decode_rate * seconds_per_window}
    print(f"\nbundled neurorvq/tokenizer-small (mdct, {len(widths)} bands x {small.config.num_quantizers} stages x "
          f"{small.config.codebook_size} codes, refiner {small.config.refiner_layers} layers): "
          f"{mdct_flops / 1e9:.3f} GFLOP per window encoded")
    print(f"  encode {encode_rate:8.1f} windows/s {encode_rate * seconds_per_window:9.0f} channel-s/s "
          f"{encode_rate * mdct_flops / 1e9:7.1f} GFLOP/s {encode_rate * mdct_flops / 1e9 / peak32:6.1%} of fp32 peak")
    print(f"  decode {decode_rate:8.1f} windows/s {decode_rate * seconds_per_window:9.0f} channel-s/s")
    corpus = [f for f in sorted(args.tokenize_data.glob("*.edf")) if not RESERVED.search(f.name)] \
        if args.tokenize_data.is_dir() else []
    if corpus:
        results["datasets_tokenization"] = datasets_tokenization(corpus, small)
    print(json.dumps(results))


def datasets_tokenization(files: list[Path], tokenizer: NeuroRVQTokenizer) -> dict:
    """`neurorvq tokenize` (`datasets.map` over a prepared dataset, codes written to Arrow) of `files`, timed on
    its own: windows/s and EEG channel-hours per minute (the preparation is not timed)."""
    import tempfile


    from neurorvq.lbm.data import tokenize_dataset
    from neurorvq.tokenizer.data import prepare_dataset

    with tempfile.TemporaryDirectory() as folder:
        prepared, codes = Path(folder) / "prepared", Path(folder) / "codes"
        prepare_dataset(files, prepared, validation_fraction=0.0, progress=False)
        hours, windows = channel_hours(prepared)
        start = CLOCK()
        tokenize_dataset(prepared, tokenizer, codes)
        wall = CLOCK() - start
    print(f"\n`datasets` tokenization (`neurorvq tokenize`, bundled tokenizer, {len(files)} recordings, {windows} windows, "
          f"{hours:.2f} channel-hours): {windows / wall:.1f} windows/s, {hours / wall * 60:.1f} channel-hours per minute")
    return {"windows": windows, "channel_hours": hours, "seconds": wall, "windows_per_second": windows / wall,
            "channel_hours_per_minute": hours / wall * 60}


if __name__ == "__main__":
    main()
