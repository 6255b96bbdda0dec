"""Two-sample classifiers of the realism report (C2ST) with subject-grouped folds, and train-on-synthetic /
test-on-real (TSTR) for labelled sets.

A classifier learns to tell windows of one set (label 1) from windows of another (label 0) and is scored on
held-out windows: 0.5 = indistinguishable (`CHANCE`), 1 = always told apart. Folds are grouped (scikit-learn
`StratifiedGroupKFold`: every window of a subject or draw is on one side of a split); `lbm.realism` says why and how
to read the accuracies beside their floors. Three classifiers (`CLASSIFIERS`), each reading its own measurements
(`lbm.realism_metrics._measure`):

- `bandpower`: per-channel log band powers (dB) and every channel pair's Pearson r (1-40 Hz) -> standardised
  logistic regression;
- `covariance` (and `covariance/<band>`): OAS spatial covariance -> Riemannian tangent space (pyriemann) ->
  logistic regression;
- `learned`: `ShallowConvNetClassifier`, a small torch network trained on the raw windows at `LEARNED_RATE` Hz.

`two_sample_test` runs one of them on two sets; `state_classification` / `tstr_trtr` score a state classifier of
labelled sets. Imports no model (a torch network of its own only).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..tokenizer.metrics import BANDS
from .realism_data import SAMPLING_RATE, _check_rate, _window_length, _window_set, _WindowSet, as_signal, cut_windows
from .realism_metrics import _measure, _Measurements, band_powers

LEARNED_RATE = 100.0  # Hz: the learned classifier sees 0-50 Hz, every band of the report, at a quarter of the cost
CHANCE = 0.5
CLASSIFIERS = ("bandpower", "covariance", "learned")
CLASSIFIER_LABELS = {"bandpower": "C2ST band power + pair r (LR)", "covariance": "C2ST covariance 1-40 Hz (tangent LR)",
                     "learned": "C2ST learned (ShallowConvNet-style)"}


# ----------------------------------------------------------------------------------------------------
# The learned classifier
# ----------------------------------------------------------------------------------------------------


class _ShallowConvNet(nn.Module):
    """ShallowConvNet-style (Schirrmeister et al. 2017) log band-power network: spatial filters across channels,
    a temporal filter bank per spatial filter, square, average pool, log, linear.

    The two linear convolutions run spatial-first (a 1x1 convolution over channels, then a depthwise temporal one),
    the order that keeps the cost independent of the channel count (64-channel EEG trains as fast as 19-channel).
    Input `[B, C, T]` (scaled EEG at `sampling_rate`), output logits `[B, 2]`.
    """

    def __init__(self, num_channels: int, num_samples: int, sampling_rate: float, spatial_filters: int = 16,
                 temporal_filters: int = 2):
        super().__init__()
        kernel = int(round(0.1 * sampling_rate)) | 1  # 0.1 s, as ShallowConvNet
        pool, stride = int(round(0.5 * sampling_rate)), int(round(0.25 * sampling_rate))
        features = spatial_filters * temporal_filters
        self.spatial = nn.Conv1d(num_channels, spatial_filters, 1, bias=False)
        self.temporal = nn.Conv1d(spatial_filters, features, kernel, groups=spatial_filters, bias=False)
        self.norm = nn.BatchNorm1d(features)
        self.pool = nn.AvgPool1d(pool, stride)
        self.dropout = nn.Dropout(0.5)
        positions = (num_samples - kernel + 1 - pool) // stride + 1
        if positions < 1:
            raise ValueError(f"windows of {num_samples} samples are too short for the learned classifier")
        self.head = nn.Linear(features * positions, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.temporal(self.spatial(x)))
        h = torch.log(self.pool(h.square()).clamp_min(1e-6))
        return self.head(self.dropout(h.flatten(1)))


class ShallowConvNetClassifier:
    """scikit-learn classifier around `_ShallowConvNet`: `fit(X [N, C, T], y)` makes `steps` optimizer updates on CPU
    (AdamW, shuffled mini-batches, class-weighted loss; a fixed number of updates, so a small training set is
    learned as well as a large one; seeded: the same data and seed give the same model),
    `predict(X)` -> labels.
    Inputs are divided by the training windows' std (one number: amplitude differences stay visible)."""

    def __init__(self, sampling_rate: float = LEARNED_RATE, steps: int = 100, batch_size: int = 32,
                 learning_rate: float = 3e-3, weight_decay: float = 1e-2, seed: int = 0):
        self.sampling_rate, self.steps, self.batch_size = sampling_rate, steps, batch_size
        self.learning_rate, self.weight_decay, self.seed = learning_rate, weight_decay, seed

    # the scikit-learn estimator protocol (`sklearn.base.clone`) without importing scikit-learn with this module
    def get_params(self, deep: bool = True) -> dict:
        return {"sampling_rate": self.sampling_rate, "steps": self.steps, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate, "weight_decay": self.weight_decay, "seed": self.seed}

    def set_params(self, **params) -> "ShallowConvNetClassifier":
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, X: np.ndarray, y: np.ndarray) -> "ShallowConvNetClassifier":
        X = np.asarray(X, dtype=np.float32)
        self.classes_, target = np.unique(y, return_inverse=True)
        self.scale_ = float(X.std()) or 1.0
        x, target = torch.from_numpy(X / self.scale_), torch.from_numpy(target)
        weight = torch.from_numpy(len(target) / (2.0 * np.bincount(target, minlength=2))).float()  # balanced classes
        with torch.random.fork_rng():  # seeded initialisation and dropout without touching the caller's RNG
            torch.manual_seed(self.seed)
            self.net_ = _ShallowConvNet(X.shape[1], X.shape[2], self.sampling_rate)
            optimizer = torch.optim.AdamW(self.net_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
            order = torch.Generator().manual_seed(self.seed)
            self.net_.train()
            step = 0
            while step < self.steps:  # epochs of shuffled mini-batches until `steps` updates
                for batch in torch.randperm(len(x), generator=order).split(self.batch_size):
                    if len(batch) < 2 or step >= self.steps:  # batch norm needs two windows
                        continue
                    loss = nn.functional.cross_entropy(self.net_(x[batch]), target[batch], weight=weight)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    step += 1
        self.net_.eval()
        return self

    @torch.no_grad()
    def predict(self, X: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(X, dtype=np.float32) / self.scale_)
        logits = torch.cat([self.net_(part) for part in x.split(256)])
        return self.classes_[logits.argmax(-1).numpy()]


# ----------------------------------------------------------------------------------------------------
# Classifiers, their inputs, grouped cross-validation
# ----------------------------------------------------------------------------------------------------


def _estimator(name: str, seed: int):
    """A fresh scikit-learn estimator for classifier `name` ("bandpower", "covariance[/band]", "learned")."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # class weights balance every training fold: grouped folds leave the classes unequal in a fold, and a classifier
    # that leaned on the training prior would score below chance on the held-out windows of the larger test class
    logistic = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000)
    if name == "bandpower":
        return make_pipeline(StandardScaler(), logistic)
    if name.startswith("covariance"):
        from pyriemann.tangentspace import TangentSpace

        return make_pipeline(TangentSpace(metric="riemann"), StandardScaler(), logistic)
    if name == "learned":
        return ShallowConvNetClassifier(seed=seed)
    raise ValueError(f"unknown classifier {name!r}; known: {CLASSIFIERS}")


def _classifier_input(measured: _Measurements, name: str) -> np.ndarray:
    """What classifier `name` sees per window: features [N, D], covariances [N, C, C] or windows [N, C, L']."""
    if name == "bandpower":
        powers = measured.band_db.reshape(len(measured.band_db), -1)
        return np.concatenate([powers, measured.correlation["broadband"]], 1)
    if name.startswith("covariance"):
        return measured.covariance[name.partition("/")[2] or "broadband"]
    return measured.resampled


def _cross_validated_accuracy(a: np.ndarray, b: np.ndarray, groups_a: np.ndarray, groups_b: np.ndarray, name: str,
                              folds: int, seed: int, grouped: bool = True) -> dict:
    """Held-out accuracy of classifier `name` telling `a` (label 1) from `b` (label 0), windows of equal counts.

    Grouped folds (`StratifiedGroupKFold`) keep every group's windows on one side of each split; a group id found in
    both sets is one group (its windows of both sets move together). Every window is predicted once, by the model
    of the fold that held it out; the accuracy pools those predictions (a fold without test windows is skipped).
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    x = np.concatenate([a, b])
    y = np.repeat([1, 0], [len(a), len(b)])
    groups = np.concatenate([groups_a, groups_b])
    if grouped:
        # at most as many folds as the smaller class has groups: every training fold then holds both classes
        splits = min(folds, len(set(groups_a.tolist())), len(set(groups_b.tolist())))
        if splits < 2:
            raise ValueError("grouped folds need at least 2 groups in each set")
        cv = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    else:
        splits = folds
        cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    estimator = _estimator(name, seed)
    predicted = np.full(len(y), -1)
    for train, test in cv.split(x, y, groups if grouped else None):
        if len(test) and len(set(y[train].tolist())) == 2:
            predicted[test] = clone(estimator).fit(x[train], y[train]).predict(x[test])
    scored = predicted >= 0
    return {"accuracy": float((predicted[scored] == y[scored]).mean()), "folds": splits}


def _balanced(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """`n` of `count` window indices at random, sorted."""
    return np.sort(rng.choice(count, n, replace=False))


def _expand_classifiers(classifiers: Sequence[str], covariance_bands: bool) -> list[str]:
    if isinstance(classifiers, str):
        classifiers = [classifiers]
    unknown = [c for c in classifiers if c not in CLASSIFIERS]
    if unknown:
        raise ValueError(f"unknown classifier(s) {unknown}; known: {list(CLASSIFIERS)}")
    names = []
    for c in classifiers:
        names.append(c)
        if c == "covariance" and covariance_bands:
            names += [f"covariance/{band}" for band in BANDS]
    return names


def _measure_for(data: _WindowSet, names: Sequence[str], sampling_rate: float, length: int,
                 classified: np.ndarray | None = None) -> _Measurements:
    """`_measure` of `data` with what classifiers `names` read besides the descriptive measurements: the
    covariances of their bands and, for `learned`, the windows at `LEARNED_RATE`, for the windows `classified`."""
    bands = [n.partition("/")[2] or "broadband" for n in names if n.startswith("covariance")]
    return _measure(data, sampling_rate, length, bands, LEARNED_RATE if "learned" in names else None, classified)


def two_sample_test(a: Any, b: Any, sampling_rate: float = SAMPLING_RATE, groups_a: Sequence | None = None,
                    groups_b: Sequence | None = None, classifier: str = "bandpower", window_seconds: float = 4.0,
                    folds: int = 5, seed: int = 0, grouped: bool = True) -> dict:
    """One classifier-based two-sample test: can `classifier` tell the windows of `a` from those of `b`?

    Args:
        a, b: EEG sets, `[N, C, T]` arrays or lists of `[C, T]` arrays in µV, one montage (same channel order).
        sampling_rate: Hz, of both.
        groups_a, groups_b: a group id per item (subject, recording, draw); default: every item its own group.
            An id found in both sets is the same group (e.g. one subject's windows split between a and b).
        classifier: "bandpower", "covariance", "covariance/<band>" or "learned".
        grouped: grouped folds (`StratifiedGroupKFold`, the default) or window-level folds (`StratifiedKFold`,
            leaky when groups differ: shown here so the leak can be measured).

    Returns `accuracy` (pooled held-out, 0.5 = indistinguishable), `folds`, `n_windows_per_class`.
    """
    rate = _check_rate(sampling_rate)
    length = _window_length(window_seconds, rate)
    first = a[0] if len(a) else None
    num_channels = int(np.asarray(first).shape[0]) if first is not None else 0
    sets = [_window_set(name, x, g, num_channels, length, f"{name}/") for name, x, g in
            (("a", a, groups_a), ("b", b, groups_b))]
    if classifier not in CLASSIFIERS and not (classifier.startswith("covariance/")
                                              and classifier.partition("/")[2] in BANDS):
        raise ValueError(f"unknown classifier {classifier!r}; known: {list(CLASSIFIERS)} or covariance/<band>")
    rng = np.random.default_rng(seed)
    n = min(len(s) for s in sets)
    keep = [_balanced(rng, len(s), n) for s in sets]
    measured = [_measure_for(s, [classifier], rate, length, k) for s, k in zip(sets, keep)]
    inputs = [_classifier_input(m, classifier)[k] for m, k in zip(measured, keep)]
    result = _cross_validated_accuracy(inputs[0], inputs[1], sets[0].groups[keep[0]], sets[1].groups[keep[1]],
                                       classifier, folds, seed, grouped)
    return {**result, "n_windows_per_class": n, "grouped": grouped}


# ----------------------------------------------------------------------------------------------------
# Labelled sets: train on synthetic, test on real (TSTR) beside train on real, test on real (TRTR)
# ----------------------------------------------------------------------------------------------------


def state_features(items: Sequence[Any], sampling_rate: float = SAMPLING_RATE,
                   window_seconds: float = 4.0) -> np.ndarray:
    """Log band powers (dB) of every channel of every `window_seconds` window of `items` (`[C, T]` µV, one
    montage): `[N, C * 5]`."""
    signals = [as_signal(x) for x in items]
    windows, _ = cut_windows(signals, int(round(window_seconds * sampling_rate))) if signals else (np.zeros(0), None)
    if not len(windows):
        return np.zeros((0, 0))
    return np.stack([band_powers(w, sampling_rate).ravel() for w in windows])


def _labelled_features(items_by_label: dict[str, list], classes: Sequence[str], sampling_rate: float,
                       window_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for index, name in enumerate(classes):
        block = state_features(items_by_label.get(name, []), sampling_rate, window_seconds)
        if len(block):
            features.append(block)
            labels.append(np.full(len(block), index))
    if not features:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    return np.concatenate(features), np.concatenate(labels)


def state_classification(train: dict[str, list], test: dict[str, list], classes: Sequence[str],
                         sampling_rate: float = SAMPLING_RATE, window_seconds: float = 4.0) -> float:
    """Balanced accuracy on `test` of a logistic regression (standardised `state_features`) fitted on `train`
    (each: label -> list of `[C, T]` µV items of one montage). NaN when either lacks a class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _labelled_features(train, classes, sampling_rate, window_seconds)
    x_test, y_test = _labelled_features(test, classes, sampling_rate, window_seconds)
    if len(set(y_train.tolist())) < len(classes) or len(set(y_test.tolist())) < len(classes):
        return float("nan")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    classifier.fit(x_train, y_train)
    return float(balanced_accuracy_score(y_test, classifier.predict(x_test)))


def tstr_trtr(synthetic: dict[str, list], real_train: dict[str, list], real_test: dict[str, list],
              classes: Sequence[str], sampling_rate: float = SAMPLING_RATE) -> dict:
    """Is labelled synthetic EEG useful for a state classifier? (each argument: label -> list of `[C, T]` µV items;
    `real_test` should be other subjects than `real_train`.) Balanced accuracies on `real_test` of the classifier
    of [`state_classification`] trained on `real_train` (`trtr`), on `synthetic` (`tstr`), on both
    (`real_plus_synthetic`), and `chance` (1 / classes)."""
    both = {c: list(real_train.get(c, [])) + list(synthetic.get(c, [])) for c in classes}
    return {"trtr": state_classification(real_train, real_test, classes, sampling_rate),
            "tstr": state_classification(synthetic, real_test, classes, sampling_rate),
            "real_plus_synthetic": state_classification(both, real_test, classes, sampling_rate),
            "chance": 1 / len(classes)}


__all__ = ["CHANCE", "CLASSIFIERS", "ShallowConvNetClassifier", "state_classification", "state_features", "tstr_trtr",
           "two_sample_test"]
