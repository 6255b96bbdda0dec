"""LBMs and their sampling settings measured against the realism report, side by side.

    python benchmarks/lbm_realism_ablation.py --data <prepared> --codes <codes> \
        --run lbm-small "neurorvq/lbm-small" "" \
        --run rounds-4 "neurorvq/lbm-small" "num_rounds=4" \
        --run depthwise "neurorvq/lbm-small-depthwise" "" [--samples 32 --seconds 8 --output table.json]

Each `--run NAME MODEL SETTINGS` samples `--samples` x `--seconds` s of the montage of the validation subjects
(`--num-channels`: 19 = EEGMAT's 10-20, 64 = EEGMMIDB's 10-10) (unconditional; SETTINGS = comma-separated `generate` overrides, e.g. `temperature=0.9,num_rounds=8`; empty =
the model's defaults), decodes with the bundled tokenizer (noise filling, as the pipeline does) and reports, against
the validation subjects' real EEG (grouped by subject; floor = real EEG of the training subjects). MODEL
`reconstruction` (SETTINGS `noise_filling=off|independent|coherent`) measures the tokenizer alone instead: the validation windows'
own reconstructions against them, the ceiling of any LBM decoded by that tokenizer:

- bits per position (= per channel-second) of the model on the validation codes (once per model), beside the count
  models on the same codes; the spatial LBM's figure is its any-order upper bound;
- the three C2STs (band power, covariance 1-40 Hz, learned) beside their floors; correlation-matrix error; the lowest
  per-band topography r; the largest band power difference (dB);
- order drift: the montage sampled in its order and reversed (`realism.order_drift`), dB per channel;
- TSTR / TRTR rest vs arithmetic (samples conditioned on each state, `--condition-samples` each);
- sampling wall time per sample-second (indicative only: use `generation_speed_ab.py` for speed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from neurorvq.lbm.count_models import count_baselines
from neurorvq.lbm.data import load_codes
from neurorvq.lbm.realism import realism_report
from neurorvq.lbm.realism_classifiers import tstr_trtr
from neurorvq.lbm.realism_data import prepared_set
from neurorvq.lbm.realism_metrics import order_drift
from neurorvq.lbm.sampling import decode_generated, decoding_noise, generation_kwargs
from neurorvq.lbm.training import load_lbm, validation_nll
from neurorvq.pipelines.cli_common import non_negative_int, positive_int
from neurorvq.tokenizer import NeuroRVQTokenizer
from neurorvq.tokenizer.data import load_prepared

STATES = ("rest", "arithmetic")


def parse_settings(text: str) -> dict:
    settings = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def real_sets(validation, train, num_channels: int):
    """The montage (that of the first validation window with `num_channels` channels) and its windows `[C, T]` (µV)
    with subject ids and labels (`prepared_set`): the validation subjects' (reference), the training subjects' (floor)."""
    montage = next(list(r) for r in validation["channel_names"] if len(r) == num_channels)
    return montage, prepared_set(validation, montage), prepared_set(train, montage)


def sample(model, tokenizer, channels, num_samples, seconds, seed, settings, condition=None) -> list[np.ndarray]:
    """Samples decoded as the pipeline does; SETTINGS' `noise_filling` (independent / coherent / off) overrides the
    model's decoding; its `guidance_scale` applies to conditional samples only (as a saved one does)."""
    settings = dict(settings)
    noise = settings.pop("noise_filling", None) or decoding_noise(model)
    if condition is None:
        settings.pop("guidance_scale", None)
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(list(channels), num_patches=seconds, batch_size=num_samples, generator=generator,
                         condition=condition, **generation_kwargs(model, **settings))
    return list(decode_generated(tokenizer, out, list(channels), generator, noise_filling=noise).numpy())


def reconstruct(tokenizer, items: list[np.ndarray], channels, seconds: int, noise_filling: str, seed: int):
    """The first `seconds` of each real item, encoded and decoded (seeded noise filling: independent, coherent or
    off) -> list of [C, T] µV."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for x in items:
        encoded = tokenizer.encode(torch.from_numpy(x[None, :, : seconds * 200]).float(), list(channels))
        generated = {"codes": encoded.codes, "scale_codes": encoded.scale_codes}
        out.append(decode_generated(tokenizer, generated, channels, generator, noise_filling=noise_filling)[0].numpy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--codes", required=True)
    parser.add_argument("--run", nargs=3, action="append", metavar=("NAME", "MODEL", "SETTINGS"), required=True)
    parser.add_argument("--samples", type=positive_int, default=32)
    parser.add_argument("--seconds", type=positive_int, default=8)
    parser.add_argument("--condition-samples", type=non_negative_int, default=24, help="samples per state for TSTR (0 skips it)")
    parser.add_argument("--classifiers", default="bandpower,covariance,learned")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-channels", type=int, default=19,
                        help="the montage: that of the validation windows with this many channels (19 or 64 here)")
    parser.add_argument("--no-bits", action="store_true")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    tokenizer = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small").eval()
    validation, train = load_prepared(args.data, "validation"), load_prepared(args.data, "train")
    montage, reference, floor = real_sets(validation, train, args.num_channels)
    real, real_groups, real_labels = reference.signals, reference.groups, reference.labels
    other, other_groups, other_labels = floor.signals, floor.groups, floor.labels
    by_state = lambda items, labels: {s: [x for x, y in zip(items, labels) if y == s] for s in STATES}  # noqa: E731
    codes_train, codes_validation = load_codes(args.codes, "train"), load_codes(args.codes, "validation")
    classifiers = args.classifiers.split(",")
    models, bits, rows = {}, {}, []
    baselines = None
    for name, model_name, settings_text in args.run:
        settings = parse_settings(settings_text)
        if model_name == "reconstruction":
            synthetic = reconstruct(tokenizer, real, montage, args.seconds, settings.get("noise_filling", "off"), args.seed)
            report = realism_report(synthetic, real, montage, real_groups=real_groups, other_real=other,
                                    other_real_groups=other_groups, classifiers=classifiers, covariance_bands=False,
                                    repeats=args.repeats, seed=args.seed)
            row = {"name": name, "model": model_name, "settings": settings, "bits_per_position": None,
                   "seconds_per_sample_second": float("nan"), "metrics": report["metrics"],
                   "order_drift": {}, "tstr": None}
            rows.append(row)
            print(summary_line(row), flush=True)
            continue
        if model_name not in models:
            models[model_name] = load_lbm(model_name).eval()
        model = models[model_name]
        if not args.no_bits and model_name not in bits:
            bits[model_name] = validation_nll(model, codes_validation)["bits_per_position"]
            if baselines is None:
                sizes = model.config.code_layout.stream_vocab_sizes
                baselines = {k: v["bits_per_position"] for k, v in
                             count_baselines(codes_train, codes_validation, sizes).items()}
        start = time.perf_counter()
        synthetic = sample(model, tokenizer, montage, args.samples, args.seconds, args.seed, settings)
        per_second = (time.perf_counter() - start) / (args.samples * args.seconds)
        report = realism_report(synthetic, real, montage, real_groups=real_groups, other_real=other,
                                other_real_groups=other_groups, classifiers=classifiers, covariance_bands=False,
                                repeats=args.repeats, seed=args.seed)
        reversed_montage = montage[::-1]
        backwards = sample(model, tokenizer, reversed_montage, args.samples, args.seconds, args.seed + 1, settings)
        drift = order_drift(synthetic, montage, backwards, reversed_montage, montage, real=real, real_groups=real_groups)
        tstr = None
        if args.condition_samples and model.config.condition_names and all(s in model.config.condition_names
                                                                          for s in STATES):
            synthetic_states = {s: sample(model, tokenizer, montage, args.condition_samples, args.seconds,
                                          args.seed + 2 + i, settings, condition=s) for i, s in enumerate(STATES)}
            tstr = tstr_trtr(synthetic_states, by_state(other, other_labels), by_state(real, real_labels), STATES)
        row = {"name": name, "model": model_name, "settings": settings, "bits_per_position": bits.get(model_name),
               "seconds_per_sample_second": per_second, "metrics": report["metrics"], "order_drift": drift,
               "tstr": tstr}
        rows.append(row)
        print(summary_line(row), flush=True)
    if baselines:
        print("count models (bits/position): " + ", ".join(f"{k} {v:.2f}" for k, v in baselines.items()))
    if args.output:
        Path(args.output).write_text(json.dumps({"runs": rows, "count_models": baselines}, indent=1))


def summary_line(row: dict) -> str:
    metrics = row["metrics"]
    cell = lambda key: f"{metrics[key]['synthetic']:.2f} ({metrics[key]['floor']:.2f})" if key in metrics else "-"  # noqa
    topography = min((m["synthetic"] for k, m in metrics.items() if k.startswith("topography_r/")), default=float("nan"))
    bands = max((abs(m["synthetic"]) for k, m in metrics.items() if k.startswith("band_db/")), default=float("nan"))
    drift = row["order_drift"].get("order_slope_db_per_channel", float("nan"))
    tstr = "-" if row["tstr"] is None else f"{row['tstr']['tstr']:.2f} / {row['tstr']['trtr']:.2f}"
    bits = "-" if row["bits_per_position"] is None else f"{row['bits_per_position']:.1f}"
    return (f"| {row['name']} | {bits} | {cell('c2st/bandpower')} | {cell('c2st/covariance')} | {cell('c2st/learned')} "
            f"| {cell('correlation_error/broadband')} | {topography:.2f} | {bands:.2f} | {drift:+.3f} | {tstr} "
            f"| {row['seconds_per_sample_second'] * 1000:.1f} ms |")

if __name__ == "__main__":
    main()
