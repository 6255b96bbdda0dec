"""Is labelled synthetic EEG useful? Train on synthetic, test on real (TSTR), and per-condition band powers.

A conditional LBM (`LBMConfig.condition_names`) samples EEG of a given brain state. Two questions, both answered on
real EEG of validation subjects (prepared rows with a `label`, `neurorvq prepare`):

- `state_classification` (`lbm.realism.tstr_trtr`): a simple state classifier (scikit-learn logistic regression on
  standardised log band powers per channel of 4-s segments) trained on synthetic segments of each condition and tested
  on real ones (TSTR), beside the same classifier trained on real EEG of the training subjects (TRTR), on both (real +
  synthetic), and chance. Scores are balanced accuracies (mean recall over classes; chance = 1 / classes), so an
  unequal number of rest and task windows cannot inflate them.
- `condition_bands`: band powers of each condition's samples against that condition's real EEG (dB differences), and
  the alpha change between two conditions (eyes closed minus eyes open: the classic check).

`condition_report` runs both for every label set the data allows and each guidance scale.

`condition_likelihood` asks the step before: does the model's own likelihood know the state? Each code window of
two (or more) labels is scored under every condition, with the same crops and masks, and the condition of lowest NLL
is its prediction (within-subject windows only, so that subjects and devices cannot stand in for states). A model
that ignored its condition scores chance (AUC 0.5), and its conditional samples cannot differ by state.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch

from .data import collate_codes
from .evaluation import BANDS
from .sampling import decode_generated, decoding_noise
from .realism import as_signal, band_powers, state_classification, state_features, tstr_trtr
from .sampling import generation_kwargs
from .training import lbm_step, to_model_device

# label pairs a state classifier is trained on, when the validation data holds both (EEGMAT; EEGMMIDB baselines)
LABEL_SETS = (("rest", "arithmetic"), ("eyes_open", "eyes_closed"))


def _signals(rows: Sequence[dict], channels: Sequence[str]) -> list[np.ndarray]:
    """The real samples `[len(channels), T]` µV, in `channels` order, of the rows that have all of `channels`."""
    signals = []
    for row in rows:
        names = [n.lower() for n in row["channel_names"]]
        if set(channels) <= set(names):
            x = np.asarray(row["input_values"], dtype=np.float32)[:, : int(row["valid_samples"])]
            signals.append(x[[names.index(n) for n in channels]])
    return signals


def _alpha_db(items: Sequence[Any]) -> float:
    """Mean alpha band power (dB) over every channel of every item."""
    return float(np.concatenate([band_powers(x) for x in items])[:, list(BANDS).index("alpha")].mean())


def _rows_by_label(rows, labels: Sequence[str]) -> dict[str, list[dict]]:
    wanted = set(labels)
    indices = [i for i, label in enumerate(rows["label"]) if label in wanted] if "label" in rows.column_names else []
    grouped: dict[str, list[dict]] = {}
    for row in (rows[i] for i in indices):
        grouped.setdefault(row["label"], []).append(row)
    return grouped


def _montage(rows: Sequence[dict], max_channels: int) -> list[str]:
    """The channels every row of the most common montage has, at most `max_channels` of them."""
    common = Counter(tuple(n.lower() for n in r["channel_names"]) for r in rows).most_common(1)[0][0]
    return list(common[:max_channels])


def _sample(model, tokenizer, channels, condition, guidance_scale, num_samples, seconds, temperature, seed):
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(list(channels), num_patches=seconds, generator=generator, batch_size=num_samples,
                         condition=condition, **generation_kwargs(model, temperature=temperature,
                                                                  guidance_scale=guidance_scale))
    eeg = decode_generated(tokenizer, out, channels, generator, noise_filling=decoding_noise(model))
    return list(eeg.cpu().numpy())


def condition_bands(synthetic: Sequence[Any], real: Sequence[Any]) -> dict[str, float]:
    """Band power (dB, mean over channels and items) of synthetic minus real, per band."""
    s = np.concatenate([band_powers(as_signal(x)) for x in synthetic]).mean(0)
    r = np.concatenate([band_powers(as_signal(x)) for x in real]).mean(0)
    return {band: float(s[i] - r[i]) for i, band in enumerate(BANDS)}


@torch.no_grad()
def condition_report(model, tokenizer, train_rows, validation_rows, num_samples: int = 16, seconds: int = 8,
                     guidance_scales: Sequence[float] = (1.0,), temperature: float | None = None, seed: int = 0,
                     max_channels: int = 19) -> dict:
    """TSTR / TRTR / chance per label set and per-condition band differences, for each guidance scale.

    `train_rows` / `validation_rows`: prepared splits (`datasets.Dataset` with `label`). Each condition is sampled in
    the montage of its real rows (the most common one, first `max_channels` channels); its real reference is the
    validation rows of that condition, or the training rows when no validation subject has it (`reference` says
    which). Returns a JSON-serialisable dict: `label_sets` (list of {classes, montage, trtr, tstr,
    real_plus_synthetic, chance, n_real_train_windows, n_real_test_windows} per guidance scale),
    `conditions` ({name: {reference, montage, bands_db: {guidance: {band: dB}}}}) and, with eyes open and closed,
    `alpha_eyes_closed_minus_open_db` (real and synthetic per guidance scale).
    """
    names = list(model.config.condition_names or [])
    if not names:
        raise ValueError("the model knows no condition (config.condition_names is empty)")
    model.eval()
    train_by_label, validation_by_label = _rows_by_label(train_rows, names), _rows_by_label(validation_rows, names)
    report: dict = {"label_sets": [], "conditions": {}, "guidance_scales": list(guidance_scales),
                    "num_samples": num_samples, "seconds": seconds, "temperature": temperature}
    synthetic_cache: dict[tuple, list] = {}

    def synthetic(condition, channels, guidance):
        key = (condition, tuple(channels), guidance)
        if key not in synthetic_cache:
            synthetic_cache[key] = _sample(model, tokenizer, channels, condition, guidance, num_samples, seconds,
                                           temperature, seed + len(synthetic_cache))
        return synthetic_cache[key]

    for name in names:
        reference = "validation" if validation_by_label.get(name) else "train"
        rows = (validation_by_label if reference == "validation" else train_by_label).get(name, [])
        if not rows:
            continue
        channels = _montage(rows, max_channels)
        real = _signals(rows, channels)
        report["conditions"][name] = {"reference": reference, "montage": channels, "n_real_windows": len(real),
                                      "bands_db": {str(g): condition_bands(synthetic(name, channels, g), real)
                                                   for g in guidance_scales},
                                      "real_alpha_db": _alpha_db(real)}
    if {"eyes_open", "eyes_closed"} <= set(report["conditions"]):
        open_, closed = report["conditions"]["eyes_open"], report["conditions"]["eyes_closed"]
        if open_["montage"] == closed["montage"]:
            channels = open_["montage"]
            report["alpha_eyes_closed_minus_open_db"] = {
                "real": closed["real_alpha_db"] - open_["real_alpha_db"],
                "synthetic": {str(g): _alpha_db(synthetic("eyes_closed", channels, g))
                              - _alpha_db(synthetic("eyes_open", channels, g)) for g in guidance_scales}}

    for classes in LABEL_SETS:
        if not all(c in names and validation_by_label.get(c) and train_by_label.get(c) for c in classes):
            continue
        channels = _montage([r for c in classes for r in validation_by_label[c]], max_channels)
        real_train = {c: _signals(train_by_label[c], channels) for c in classes}
        real_test = {c: _signals(validation_by_label[c], channels) for c in classes}
        for guidance in guidance_scales:
            fake = {c: synthetic(c, channels, guidance) for c in classes}
            report["label_sets"].append({
                "classes": list(classes), "montage": channels, "guidance_scale": guidance,
                **tstr_trtr(fake, real_train, real_test, classes),
                "n_real_train_windows": {c: len(real_train[c]) for c in classes},
                "n_real_test_windows": {c: len(real_test[c]) for c in classes}})
    return report


def within_subject_windows(dataset, classes: Sequence[str]) -> list[int]:
    """Indices of the rows labelled with one of `classes` whose subject has rows of every class."""
    labels, subjects = list(dataset["label"]), list(dataset["subject_id"])
    by_subject: dict[str, set] = {}
    for label, subject in zip(labels, subjects):
        by_subject.setdefault(subject, set()).add(label)
    return [i for i, (label, subject) in enumerate(zip(labels, subjects))
            if label in classes and set(classes) <= by_subject[subject]]


def condition_likelihood(model, dataset, classes: Sequence[str] = ("rest", "arithmetic")) -> dict:
    """How well the model's conditional likelihood tells `classes` apart, on a code split (`neurorvq tokenize`).

    Windows are those labelled with one of `classes` whose subject has windows of every class. Each window is collated
    once (one crop) and scored alone under each class's condition (`forward(labels=True)`, whose loss is a batch
    mean; a spatial LBM in eval mode draws the same seeded masks every call). Returns `auc` (ROC AUC of
    NLL(first) - NLL(second) for the second class; two classes only), `balanced_accuracy` of the lowest-NLL
    condition (chance 1 / classes), the mean NLL gap in bits per position between the true condition and the best
    other one (> 0: the true one is more likely), and the counts."""
    names = list(model.config.condition_names or [])
    if not set(classes) <= set(names) or len(set(classes)) < 2:
        raise ValueError(f"condition_likelihood needs at least two distinct classes the model knows "
                         f"({names}), got {list(classes)}")
    keep = within_subject_windows(dataset, classes)
    if not keep:
        raise ValueError(f"no subject of this split has windows of every class {list(classes)}")
    return _likelihood_of_windows(model, dataset.select(keep), classes)


def condition_likelihoods(model, dataset, label_sets: Sequence[Sequence[str]] = LABEL_SETS) -> list[dict]:
    """`condition_likelihood` of every label set the model knows and the split has within-subject windows of."""
    names = set(model.config.condition_names or [])
    results = []
    for classes in label_sets:
        keep = within_subject_windows(dataset, classes) if set(classes) <= names else []
        if keep:
            results.append(_likelihood_of_windows(model, dataset.select(keep), classes))
    return results


@torch.no_grad()
def _likelihood_of_windows(model, rows, classes: Sequence[str]) -> dict:
    """`condition_likelihood` of the selected windows `rows` (each labelled with one of `classes`)."""
    model.eval()
    nll = np.zeros((len(rows), len(classes)))  # nats per code, [windows, classes]
    config = model.config
    for i in range(len(rows)):
        batch = collate_codes([rows[i]], max_positions=config.positions_per_context, max_patches=config.max_patches,
                              generator=torch.Generator().manual_seed(i))  # a long window's crop: seeded
        batch = to_model_device(batch, model)
        for j, name in enumerate(classes):
            batch["condition_ids"] = torch.tensor([config.condition_id(name)], device=model.device)
            nll[i, j] = float(lbm_step(model, batch).loss)
    truth = np.array([list(classes).index(label) for label in rows["label"]])
    predicted = nll.argmin(1)
    recalls = [float((predicted[truth == k] == k).mean()) for k in range(len(classes))]
    others = np.where(np.eye(len(classes), dtype=bool)[truth], np.inf, nll).min(1)
    streams = batch["positions"].shape[-1]
    report = {"classes": list(classes), "n_windows": {c: int((truth == k).sum()) for k, c in enumerate(classes)},
              "n_subjects": len(set(rows["subject_id"])), "balanced_accuracy": float(np.mean(recalls)),
              "chance": 1.0 / len(classes),
              "true_minus_other_bits_per_position": float(np.mean(others - nll[np.arange(len(truth)), truth])
                                                          * streams / math.log(2))}
    if len(classes) == 2:
        from sklearn.metrics import roc_auc_score
        report["auc"] = float(roc_auc_score(truth, nll[:, 0] - nll[:, 1]))
    return report


def format_condition_report(report: dict) -> str:
    """Markdown tables of a [`condition_report`]."""
    lines = ["| label set | guidance | TRTR | TSTR | real + synthetic | chance |", "|---|---|---|---|---|---|"]
    for row in report["label_sets"]:
        lines.append(f"| {' vs '.join(row['classes'])} | {row['guidance_scale']:g} | {row['trtr']:.3f} | "
                     f"{row['tstr']:.3f} | {row['real_plus_synthetic']:.3f} | {row['chance']:.2f} |")
    lines += ["", "| condition (real reference) | guidance | " + " | ".join(f"{b} dB" for b in BANDS) + " |",
              "|---|---|" + "---|" * len(BANDS)]
    for name, row in report["conditions"].items():
        for guidance, bands in row["bands_db"].items():
            lines.append(f"| {name} ({row['reference']}, {row['n_real_windows']} windows) | {guidance} | "
                         + " | ".join(f"{bands[b]:+.2f}" for b in BANDS) + " |")
    if "alpha_eyes_closed_minus_open_db" in report:
        a = report["alpha_eyes_closed_minus_open_db"]
        lines.append(f"\nalpha power, eyes closed - eyes open: real {a['real']:+.2f} dB; synthetic "
                     + ", ".join(f"{v:+.2f} dB (guidance {g})" for g, v in a["synthetic"].items()))
    return "\n".join(lines)


__all__ = ["LABEL_SETS", "condition_bands", "condition_likelihood", "condition_likelihoods", "condition_report", "format_condition_report",
           "state_classification", "state_features", "within_subject_windows"]
