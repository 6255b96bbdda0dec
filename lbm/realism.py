"""How far is a set of synthetic EEG from real EEG? Two-sample tests and descriptive figures, each beside its floor.

Works on samples from any generator: the inputs are arrays of EEG in **microvolts** (`[N, C, T]`, or lists of
`[C, T]` arrays), their channel names, their sampling rate (Hz) and a group id per item. No model is involved.

How to read the numbers
-----------------------
Every row of `format_report` has three columns: **synthetic | floor | chance (or the reference's own value)**.

- *reference*: the real EEG (`real`), its windows grouped by subject (or recording).
- *synthetic*: the set under test, its windows grouped by draw (the sample they were cut from).
- *floor*: the same measurement with real EEG of **other subjects** (`other_real`) in place of the synthetic set.
  Without `other_real`, the reference subjects are split into two halves (by group, `repeats` times at random):
  the floor is half against half, and the synthetic set is compared with one half, i.e. with the same amount of
  real data. New real subjects differ from the reference too; the floor says by how much. A synthetic value at
  its floor is as close to the reference as real EEG of new people is; the distance beyond it is the generator's.
- *chance*: 0.5 for the classifiers (the two classes are balanced by subsampling the larger one).

**Two-sample classifiers** (C2ST) learn to tell the synthetic windows from reference windows and are scored on
held-out windows: 0.5 = indistinguishable, 1 = always told apart. Folds are **grouped** (scikit-learn
`StratifiedGroupKFold`): every window of a subject (or of a draw) is on one side of a split. With window-level
folds a subject's windows sit on both sides, and a classifier learns to recognise subjects, not realism: real EEG
of other subjects against the reference then scores 0.95-1.0 instead of ~0.6 (see `two_sample_test(grouped=False)`).
With few subjects the floor sits away from 0.5 either way: above it when the reference subjects happen to differ
from the others, below it because holding a subject out moves its class's training mean away from it (the
"anti-learning" of cross-validation with few groups: 0.3-0.4 with 12 subjects per side). Read each accuracy beside
its floor. A generator whose draws are many small groups is held to a slightly stricter standard than the floor
(its held-out draws pull its class mean less), so a synthetic accuracy at the floor is a strong result. Three
classifiers:

- `bandpower`: per-channel log band powers (Welch, dB) and every channel pair's Pearson r (1-40 Hz) ->
  standardised logistic regression;
- `covariance`: OAS spatial covariance (pyriemann) -> Riemannian tangent space -> logistic regression, 1-40 Hz
  (`covariance`) and per band (`covariance/alpha`, ...), the signal band-passed first;
- `learned`: a small ShallowConvNet-style network trained on the raw windows (100 Hz) for a fixed number of
  updates per fold, its own features: whatever the first two miss.

**Descriptive figures** (synthetic vs reference; floor = other real vs reference): band power difference (dB,
mean over channels); topography (per channel, its mean log band power minus the mean over channels): Pearson r of
the two maps (1 = same map, 0 = unrelated) and the largest per-channel difference (dB, with the channel); the
inter-channel correlation matrix error (mean |difference| of the mean correlation matrices over channel pairs, 1-40
Hz and per band; third column: the reference's mean |r|); between-window spread (std over windows of the mean log
power) and within-window spread (std over the 1-s pieces of a window), as ratios to the reference; the 2-40 Hz
log-log spectral slope difference; the seam ratio at 1-s patch edges (`seam_ratio`, real EEG ~1).

Entry points: `realism_report` -> `format_report` / `write_report` (JSON, markdown, figures of
`lbm.realism_plots`); `two_sample_test` for one classifier; `order_drift` for generators that can sample one
montage in two channel orders; `state_classification` / `tstr_trtr` for labelled (conditional) generators;
`load_eeg` to read recordings (MNE) or a prepared dataset into a set.

Layout: `lbm.realism_data` (checked sets, windows, loaders), `lbm.realism_metrics` (spectra and the descriptive
figures, order drift), `lbm.realism_classifiers` (the two-sample classifiers, grouped folds, TSTR), this module (the
report: repeats, floors, rows, markdown, files) and `lbm.realism_plots` (its figures). Every public name of those
modules can be imported from here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..tokenizer.metrics import BANDS, band_pass, seam_ratio  # noqa: F401  (band_pass, seam_ratio: re-exported)
from .realism_classifiers import (  # noqa: F401  (re-exported: public names of lbm.realism)
    CHANCE,
    CLASSIFIER_LABELS,
    CLASSIFIERS,
    LEARNED_RATE,
    ShallowConvNetClassifier,
    _balanced,
    _classifier_input,
    _cross_validated_accuracy,
    _expand_classifiers,
    _measure_for,
    state_classification,
    state_features,
    tstr_trtr,
    two_sample_test,
)
from .realism_data import (  # noqa: F401  (re-exported: public names of lbm.realism)
    FLAT_STD,
    MIN_SAMPLING_RATE,
    MNE_SUFFIXES,
    SAMPLING_RATE,
    EEGSet,
    _check_channel_names,
    _check_rate,
    _jsonable,
    _window_length,
    _window_set,
    _WindowSet,
    as_signal,
    cut_windows,
    load_eeg,
    prepared_set,
)
from .realism_metrics import (  # noqa: F401  (re-exported: public names of lbm.realism)
    BROADBAND,
    POWER_FLOOR,
    SLOPE_RANGE,
    TOTAL_BAND,
    _compare,
    _Measurements,
    _profile,
    _reference_values,
    band_powers,
    band_powers_from_psd,
    mean_abs_correlation,
    order_drift,
    slope_from_psd,
    spectral_slope,
    total_power_db,
    welch_psd,
)


# ----------------------------------------------------------------------------------------------------
# Row labels
# ----------------------------------------------------------------------------------------------------


def _band_label(band: str) -> str:
    low, high = BROADBAND if band == "broadband" else BANDS[band]
    return f"{band} {low:g}-{high:g} Hz"


def _metric_label(key: str) -> str:
    """Row label of a metric key such as "topography_r/alpha" or "c2st/covariance/beta"."""
    kind, _, band = key.partition("/")
    if kind == "c2st":
        name, _, sub = band.partition("/")
        return f"C2ST covariance {_band_label(sub)} (tangent LR)" if sub else CLASSIFIER_LABELS[name]
    labels = {"band_db": "band power difference (dB), {}", "topography_r": "topography r, {}",
              "topography_max_db": "topography, largest channel difference (dB), {}",
              "correlation_error": "correlation matrix error (mean abs diff), {}"}
    if kind in labels:
        return labels[kind].format(_band_label(band))
    return {"spread/between": "between-window spread of log power (ratio to reference)",
            "spread/within": "within-window spread over 1-s pieces (ratio to reference)",
            "slope": "spectral slope 2-40 Hz (difference)", "seam": "seam ratio at 1-s edges"}[key]


# ----------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------


def realism_report(synthetic: Any, real: Any, channel_names: Sequence[str], sampling_rate: float = SAMPLING_RATE,
                   synthetic_groups: Sequence | None = None, real_groups: Sequence | None = None,
                   other_real: Any = None, other_real_groups: Sequence | None = None, window_seconds: float = 4.0,
                   repeats: int = 3, folds: int = 5, seed: int = 0, classifiers: Sequence[str] = CLASSIFIERS,
                   covariance_bands: bool = True) -> dict:
    """How far `synthetic` EEG is from `real` EEG, every figure beside its real-vs-real floor (module docstring).

    Args:
        synthetic, real, other_real: EEG sets in µV, `[N, C, T]` arrays or lists of `[C, T]` arrays (lengths may
            differ), rows in `channel_names` order. Each item is cut into non-overlapping `window_seconds` windows.
        channel_names: the C channel names (lower-case vocabulary names such as "fp1", "t3").
        sampling_rate: Hz, of every set (at least 100 Hz).
        synthetic_groups: a group id per synthetic item (default: every item is its own draw).
        real_groups, other_real_groups: a subject (or recording) id per item. Without `real_groups` every real item
            is its own group, which is right only when no two items share a subject (a warning says so).
        other_real: real EEG of other subjects (no group shared with `real`), for the floor; without it the floor
            is half of the reference groups against the other half (needs at least 4 groups).
        repeats: repeated group splits (random halves) / class subsamples and fold assignments: mean ± std.
        folds: grouped folds per classifier (fewer when there are fewer groups).
        classifiers: any of `CLASSIFIERS`; `covariance_bands` adds one covariance classifier per band.

    Returns a JSON-serialisable dict: `metrics` (row key -> {label, kind, synthetic, synthetic_std, floor,
    floor_std, reference, runs, ...}; `reference` is chance (0.5) for classifiers and the reference's own value
    otherwise), `settings`, `counts`, `warnings`, `maps` (profiles, correlation matrices and spectra for the
    figures) and `chance`.
    """
    names = _check_channel_names(channel_names)
    rate = _check_rate(sampling_rate)
    length = _window_length(window_seconds, rate)
    if int(repeats) < 1 or int(folds) < 2:
        raise ValueError(f"repeats must be >= 1 and folds >= 2, got repeats={repeats}, folds={folds}")
    classifier_names = _expand_classifiers(classifiers, covariance_bands)
    sets, notes = _input_sets(synthetic, real, other_real, synthetic_groups, real_groups, other_real_groups, len(names),
                              length, folds)
    plans = _splits(sets["real"], sets.get("other_real"), len(sets["synthetic"]), int(repeats), seed)
    measured = _measure_sets(sets, plans, classifier_names, rate, length)
    runs, deviations = _run_repeats(plans, sets, measured, classifier_names, folds, seed)
    full_reference = _profile(measured["real"], np.arange(len(sets["real"])))
    report = {
        "metrics": _metric_rows(runs, classifier_names, _reference_values(full_reference), deviations, names,
                                min(len(plan["keep"]["reference"]) for plan in plans)),
        "chance": CHANCE, "warnings": notes,
        "settings": {"channel_names": names, "sampling_rate": rate, "window_seconds": float(window_seconds),
                     "window_samples": length, "repeats": int(repeats), "folds": int(folds), "seed": int(seed),
                     "classifiers": classifier_names, "grouped_folds": True,
                     "floor": "other_real" if other_real is not None else "half_split",
                     "bands": {band: list(edges) for band, edges in BANDS.items()}},
        "counts": {name: {"items": len(data.items), "windows": len(data), "groups": len(data.group_names)}
                   for name, data in sets.items()},
        "maps": _maps(names, measured, sets, full_reference),
    }
    return _jsonable(report)


def _input_sets(synthetic, real, other_real, synthetic_groups, real_groups, other_real_groups, num_channels: int,
                length: int, folds: int) -> tuple[dict[str, _WindowSet], list[str]]:
    """The checked sets cut into windows ({"synthetic", "real"[, "other_real"]}) and notes on reading them."""
    notes = []
    if real_groups is None:
        notes.append("real_groups not given: every real item is its own group; if items share subjects, folds are "
                     "not grouped by subject and the accuracies are optimistic")
        warnings.warn(notes[-1], UserWarning, stacklevel=3)
    sets = {"synthetic": _window_set("synthetic", synthetic, synthetic_groups, num_channels, length, "synthetic draw "),
            "real": _window_set("real", real, real_groups, num_channels, length, "real item ")}
    if other_real is not None:
        if other_real_groups is None:
            raise ValueError("other_real: give other_real_groups (a subject id per item)")
        sets["other_real"] = _window_set("other_real", other_real, other_real_groups, num_channels, length, None)
        shared = set(sets["other_real"].group_names) & set(sets["real"].group_names)
        if shared:
            raise ValueError(f"other_real shares group(s) {sorted(shared)[:5]} with real: the floor needs real EEG of "
                             "other subjects")
    for name, data in sets.items():
        if len(data.group_names) < 2:
            raise ValueError(f"{name} has {len(data.group_names)} group: grouped folds need at least 2 groups per set")
    groups = len(sets["real"].group_names)
    if other_real is None and groups < 4:
        raise ValueError(f"real has {groups} groups: the half-vs-half floor needs at least 4 (subjects); pass "
                         "other_real (real EEG of other subjects) for the floor")
    if other_real is None and groups // 2 < 3:
        notes.append(f"a half of the {groups} reference groups holds {groups // 2}: a training fold then holds a "
                     "single reference subject and a classifier learns that subject (0.50 ± 0.00 means it called "
                     "every held-out window the other class, not that the sets are alike); pass other_real (real EEG "
                     "of other subjects) for a floor from more subjects")
    elif groups < 2 * folds:
        notes.append(f"{groups} reference groups: accuracies depend on the subjects drawn; "
                     "read them beside their floor")
    return sets, notes


def _split(real: _WindowSet, other: _WindowSet | None, repeat: int, seed: int) -> dict:
    """One repeat's reference window indices and the floor set with its indices: every window of `other` (real EEG
    of other subjects), or else the windows of a random half of the reference groups against the other half."""
    everything = np.arange(len(real))
    if other is not None:
        return {"reference": everything, "floor_set": "other_real", "floor": np.arange(len(other))}
    names = np.asarray(real.group_names, dtype=object)
    shuffled = np.random.default_rng([seed, repeat]).permutation(names)
    half = set(shuffled[: len(names) // 2].tolist())
    in_half = np.array([g in half for g in real.groups])
    return {"reference": everything[in_half], "floor_set": "real", "floor": everything[~in_half]}


def _classified_windows(plan: dict, num_synthetic: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The windows the classifiers of one repeat see, equally many per class, by role: "reference" (indices into
    the real set; the synthetic and the floor test share them), "synthetic" (into the synthetic set) and "floor"
    (into `plan["floor_set"]`: other_real, or with the half-split floor the real set's other half, disjoint from
    the reference windows)."""
    reference, floor = plan["reference"], plan["floor"]
    n = min(num_synthetic, len(reference), len(floor))
    return {"reference": reference[_balanced(rng, len(reference), n)], "synthetic": _balanced(rng, num_synthetic, n),
            "floor": floor[_balanced(rng, len(floor), n)]}


def _kept_sets(plan: dict) -> dict[str, str]:
    """Role in `plan["keep"]` -> the set its window indices point into."""
    return {"reference": "real", "synthetic": "synthetic", "floor": plan["floor_set"]}


def _splits(real: _WindowSet, other: _WindowSet | None, num_synthetic: int, repeats: int, seed: int) -> list[dict]:
    """Per repeat: `reference` window indices, `floor_set` ("other_real" or "real") and its `floor` indices
    (`_split`), and `keep`, the windows its classifiers see by role (`_classified_windows`)."""
    plans = []
    for r in range(repeats):
        plan = _split(real, other, r, seed)
        plan["keep"] = _classified_windows(plan, num_synthetic, np.random.default_rng([seed, r, 1]))
        plans.append(plan)
    return plans


def _measure_sets(sets: dict[str, _WindowSet], plans: list[dict], classifier_names: Sequence[str], rate: float,
                  length: int) -> dict[str, _Measurements]:
    """Every set measured once; what only the classifiers read, for the windows some repeat classifies."""
    classified = {name: np.unique(np.concatenate([plan["keep"][role] for plan in plans
                                                  for role, set_name in _kept_sets(plan).items() if set_name == name]))
                  for name in sets}
    return {name: _measure_for(data, classifier_names, rate, length, classified[name]) for name, data in sets.items()}


def _describe(plan: dict, measured: dict[str, _Measurements], sets: dict[str, _WindowSet]
              ) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Descriptive figures of one repeat, on every window of its split (deterministic given the split): side
    ("synthetic", "floor") -> `_compare` rows against the split's reference, and side -> the side's deviation
    profile minus the reference's ([C, B] dB)."""
    ref_profile = _profile(measured["real"], plan["reference"])
    profiles = {"synthetic": _profile(measured["synthetic"], np.arange(len(sets["synthetic"]))),
                "floor": _profile(measured[plan["floor_set"]], plan["floor"])}
    rows = {side: _compare(profile, ref_profile) for side, profile in profiles.items()}
    return rows, {side: p["deviation_db"] - ref_profile["deviation_db"] for side, p in profiles.items()}


def _classify(plan: dict, inputs: dict[str, dict[str, np.ndarray]], sets: dict[str, _WindowSet],
              classifier_names: Sequence[str], folds: int, seed: int) -> dict[str, dict[str, dict]]:
    """Held-out accuracies of one repeat: classifier -> side -> `_cross_validated_accuracy` of the synthetic
    windows (side "synthetic") or the floor set's (side "floor") against the reference windows of `plan["keep"]`."""
    keep, reference = plan["keep"], plan["keep"]["reference"]
    return {c: {side: _cross_validated_accuracy(inputs[name][c][keep[side]], inputs["real"][c][reference],
                                                sets[name].groups[keep[side]], sets["real"].groups[reference],
                                                c, folds, seed)
                for side, name in (("synthetic", "synthetic"), ("floor", plan["floor_set"]))}
            for c in classifier_names}


def _run_repeats(plans: list[dict], sets: dict[str, _WindowSet], measured: dict[str, _Measurements],
                 classifier_names: Sequence[str], folds: int, seed: int) -> tuple[dict, list[dict]]:
    """Every repeat's figures: metric key -> side ("synthetic" / "floor"; "folds" for classifiers) -> one value per
    repeat, and per repeat the deviation differences of `_describe`."""
    inputs = {name: {c: _classifier_input(m, c) for c in classifier_names} for name, m in measured.items()}
    runs: dict[str, dict[str, list]] = {}
    deviations = []
    for r, plan in enumerate(plans):
        rows, deviation = _describe(plan, measured, sets)
        for side, values in rows.items():
            for key, value in values.items():
                runs.setdefault(key, {"synthetic": [], "floor": []})[side].append(value)
        deviations.append(deviation)
        for c, sides in _classify(plan, inputs, sets, classifier_names, folds, seed + r).items():
            row = runs.setdefault(f"c2st/{c}", {"synthetic": [], "floor": [], "folds": []})
            for side, result in sides.items():
                row[side].append(result["accuracy"])
                row["folds"].append(result["folds"])
    return runs, deviations


def _summary(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if not len(values) or np.isnan(values).all():
        return float("nan"), float("nan")
    return float(np.nanmean(values)), float(np.nanstd(values))


def _metric_rows(runs: dict, classifier_names: list[str], references: dict, deviations: list[dict], names: list[str],
                 windows_per_class: int) -> dict:
    """Report rows (classifiers first, then the descriptive figures in `_compare` order) from per-repeat values."""
    # [C, B] per side: the channel's deviation (log band power minus the channel mean) minus the reference's
    mean_deviation = {side: np.mean([d[side] for d in deviations], 0) for side in ("synthetic", "floor")}
    metrics = {}
    for key in [f"c2st/{c}" for c in classifier_names] + [k for k in runs if not k.startswith("c2st/")]:
        values = runs[key]
        (s, s_std), (f, f_std) = _summary(values["synthetic"]), _summary(values["floor"])
        row = {"label": _metric_label(key), "kind": key.split("/")[0], "synthetic": s, "synthetic_std": s_std,
               "floor": f, "floor_std": f_std, "reference": CHANCE if key.startswith("c2st/") else references[key],
               "runs": {"synthetic": values["synthetic"], "floor": values["floor"]}}
        if key.startswith("c2st/"):
            row["folds"], row["n_windows_per_class"] = int(min(values["folds"])), int(windows_per_class)
        if key.startswith("topography_max_db/"):
            b = list(BANDS).index(key.partition("/")[2])
            row["channel"] = names[int(np.abs(mean_deviation["synthetic"][:, b]).argmax())]
            row["per_channel_db"] = {side: mean_deviation[side][:, b] for side in mean_deviation}
        metrics[key] = row
    return metrics


def _maps(names: list[str], measured: dict, sets: dict, reference: dict) -> dict:
    """What the figures draw: per set, band dB and deviation profiles [C][B], the mean 1-40 Hz correlation matrix
    [C][C] and the mean channel PSD over 0.5-45 Hz."""
    upper = np.triu_indices(len(names), 1)

    def matrix(pairs: np.ndarray) -> list:
        full = np.eye(len(names))
        full[upper] = pairs
        full[upper[::-1]] = pairs
        return full.tolist()

    profiles = {"real": reference}
    profiles.update({name: _profile(measured[name], np.arange(len(sets[name]))) for name in sets if name != "real"})
    keep = (measured["real"].frequencies >= 0.5) & (measured["real"].frequencies <= 45)
    return {"channel_names": names, "bands": list(BANDS),
            "band_db": {n: p["band_db"].tolist() for n, p in profiles.items()},
            "deviation_db": {n: p["deviation_db"].tolist() for n, p in profiles.items()},
            "correlation": {n: matrix(p["correlation"]["broadband"]) for n, p in profiles.items()},
            "spectra": {"frequencies": measured["real"].frequencies[keep].tolist(),
                        **{n: p["psd"][keep].tolist() for n, p in profiles.items()}},
            "slope": {n: p["slope"] for n, p in profiles.items()}}


# ----------------------------------------------------------------------------------------------------
# Table and files
# ----------------------------------------------------------------------------------------------------


_VALUE_FORMATS = {"c2st": "{:.2f}", "band_db": "{:+.2f}", "topography_r": "{:.2f}", "topography_max_db": "{:.2f}",
                  "correlation_error": "{:.3f}", "spread": "{:.2f}", "slope": "{:+.2f}", "seam": "{:.2f}"}
_REFERENCE_FORMATS = {"c2st": "{:.2f} (chance)", "band_db": "{:.1f} dB", "topography_r": "{:.0f} (unrelated maps)",
                      "topography_max_db": "channel sd {:.2f} dB", "correlation_error": "mean abs r {:.2f}",
                      "spread": "{:.2f} dB", "slope": "{:.2f}", "seam": "{:.2f}"}


def _cell(value: float | None, template: str, std: float | None = None) -> str:
    if value is None:
        return "n/a"
    return template.format(value) + (f" ± {std:.2f}" if std is not None else "")


def format_report(report: dict) -> str:
    """A [`realism_report`] as markdown: one row per metric, synthetic | floor | chance or the reference's value."""
    settings, counts = report["settings"], report["counts"]
    floor = ("real EEG of other subjects vs the reference" if settings["floor"] == "other_real" else
             f"half of the reference subjects vs the other half ({settings['repeats']} random halves; the synthetic "
             "set is compared with one half)")
    described = "; ".join(f"{name}: {c['items']} items, {c['windows']} windows, {c['groups']} groups"
                          for name, c in counts.items())
    lines = [f"Realism of synthetic EEG: {len(settings['channel_names'])} channels, {settings['sampling_rate']:g} Hz, "
             f"{settings['window_seconds']:g}-s windows ({described}).",
             f"Floor = {floor}. Classifier accuracies: folds grouped by subject / draw, classes balanced, "
             f"mean ± std over {settings['repeats']} repeats; chance {report['chance']:.2f}.", "",
             "| metric | synthetic | floor (real vs real) | chance / reference |", "|---|---|---|---|"]
    for row in report["metrics"].values():
        kind = row["kind"]
        spread = kind == "c2st" and settings["repeats"] > 1  # descriptive spreads are in the JSON
        synthetic = _cell(row["synthetic"], _VALUE_FORMATS[kind], row["synthetic_std"] if spread else None)
        floor_value = _cell(row["floor"], _VALUE_FORMATS[kind], row["floor_std"] if spread else None)
        label = row["label"] + (f" [{row['channel']}]" if "channel" in row else "")
        lines.append(f"| {label} | {synthetic} | {floor_value} | {_cell(row['reference'], _REFERENCE_FORMATS[kind])} |")
    for note in report.get("warnings", []):
        lines.append(f"\nnote: {note}")
    return "\n".join(lines)


REPORT_FILES = ("report.json", "report.md", "c2st.png", "topomaps.png", "correlation.png", "spectra.png")


def write_report(report: dict, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Write report.json, report.md and the figures (`lbm.realism_plots`) into `out_dir`; returns their paths.
    Refuses (FileExistsError, before writing anything) to replace an existing file unless `overwrite`."""
    from .realism_plots import plot_report

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: give a folder for the report")
    existing = [str(out / name) for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s): pass overwrite=True (--overwrite) to replace them, "
                              "or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(format_report(report) + "\n")
    return [out / "report.json", out / "report.md", *plot_report(report, out)]


__all__ = [
    "BANDS",
    "CHANCE",
    "CLASSIFIERS",
    "EEGSet",
    "ShallowConvNetClassifier",
    "as_signal",
    "band_powers",
    "cut_windows",
    "format_report",
    "load_eeg",
    "mean_abs_correlation",
    "order_drift",
    "prepared_set",
    "realism_report",
    "spectral_slope",
    "state_classification",
    "state_features",
    "total_power_db",
    "tstr_trtr",
    "two_sample_test",
    "welch_psd",
    "write_report",
]
