"""The released NeuroRVQ channel vocabulary and the mapping of recorded channel names onto it."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

# The released EEG v1 vocabulary: 104 lower-case names whose order indexes the spatial embedding
# (row i of the 105-row table is channel i; row 0 is shared with the CLS token, as released).
CHANNEL_VOCABULARY: tuple[str, ...] = (
    "a1", "a2", "af3", "af4", "af7", "af8", "afz", "c1", "c2", "c3", "c4", "c5", "c6", "ccp1", "ccp2",
    "ccp3", "ccp4", "ccp5", "ccp6", "ccp7", "ccp8", "cfc1", "cfc2", "cfc3", "cfc4", "cfc5", "cfc6", "cfc7",
    "cfc8", "cp1", "cp2", "cp3", "cp4", "cp5", "cp6", "cpz", "cz", "eog", "f1", "f10", "f2", "f3", "f4",
    "f5", "f6", "f7", "f8", "f9", "fc1", "fc2", "fc3", "fc4", "fc5", "fc6", "fcz", "fp1", "fp2", "fpz",
    "ft7", "ft8", "fz", "iz", "loc", "o1", "o2", "oz", "p08", "p1", "p10", "p2", "p3", "p4", "p5", "p6",
    "p7", "p8", "p9", "po1", "po10", "po2", "po3", "po4", "po7", "po8", "po9", "poz", "pz", "roc", "sp1",
    "sp2", "t1", "t10", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "tp10", "tp7", "tp8", "tp9",
)

# Reference suffixes stripped from monopolar labels ("Fp1-REF", "C3-LE", "F4-A1", "O1-M2", ...).
REFERENCE_SUFFIXES: tuple[str, ...] = ("-ref", "-le", "-ar", "-avg", "-a1", "-a2", "-m1", "-m2")

# Aliases applied after normalisation. Each maps a widely used label onto the vocabulary's name for
# the same site:
# - "m1"/"m2" (left/right mastoid, the 10-10 / Neuroscan naming) -> "a1"/"a2": the vocabulary has no
#   mastoid entries, and A1/A2 (earlobes) are the neighbouring reference sites that clinical systems
#   use interchangeably with the mastoids.
# Deliberately NOT aliased: the old 10-20 temporal names t3/t4/t5/t6 (= 10-10 t7/t8/p7/p8), because
# the released vocabulary holds both spellings as separate rows with separately trained embeddings;
# "e1"/"e2" (AASM EOG labels), because EGI nets name their electrodes E1..E256.
CHANNEL_ALIASES: dict[str, str] = {"m1": "a1", "m2": "a2"}

_ON_UNKNOWN = ("raise", "drop")


def normalize_channel_name(name: str) -> str:
    """Normalise a recorded channel label to the vocabulary's spelling.

    Steps, in order: strip whitespace; lower-case; strip trailing dots (EEGMMIDB ``"Fc5."``, ``"C5.."``);
    strip a leading ``"eeg "`` prefix (EDF ``"EEG Fp1"``); strip a reference suffix
    (:data:`REFERENCE_SUFFIXES`); keep the first electrode of a bipolar label (``"Fpz-Cz"`` -> ``"fpz"``;
    :func:`map_channel_names` warns about it, since the signal is a difference of two electrodes);
    apply :data:`CHANNEL_ALIASES` (``"m1"`` -> ``"a1"``).

    The result need not be in the vocabulary; :func:`map_channel_names` decides what to do with it.
    """
    if not isinstance(name, str):
        raise ValueError(f"channel names must be strings, got {name!r} ({type(name).__name__})")
    out = name.strip().lower().rstrip(".").strip()
    if out.startswith("eeg "):
        out = out[4:].strip()
    for suffix in REFERENCE_SUFFIXES:
        if out.endswith(suffix) and len(out) > len(suffix):
            out = out[: -len(suffix)].strip()
            break
    if "-" in out:
        first = out.split("-", 1)[0].strip()
        if first:
            out = first
    out = out.rstrip(".").strip()
    return CHANNEL_ALIASES.get(out, out)


def is_bipolar(name: str) -> bool:
    """A bipolar derivation such as ``"Fp1-F7"`` or ``"EEG Fpz-Cz"``: two electrodes, not one electrode against a
    reference (``"C3-REF"``, ``"O1-M2"`` and the like are referential, see :data:`REFERENCE_SUFFIXES`)."""
    if not isinstance(name, str):
        return False
    out = name.strip().lower().rstrip(".").strip()
    if out.startswith("eeg "):
        out = out[4:].strip()
    if any(out.endswith(suffix) and len(out) > len(suffix) for suffix in REFERENCE_SUFFIXES):
        return False
    first, _, second = out.partition("-")
    return bool(first.strip()) and bool(second.strip())


def map_channel_names(
    names: Sequence[str],
    vocabulary: Sequence[str] = CHANNEL_VOCABULARY,
    on_unknown: str = "raise",
) -> tuple[list[str], list[int]]:
    """Map recorded channel labels onto the vocabulary.

    Returns ``(mapped, kept)``: ``mapped[i]`` is the vocabulary name of the channel at position
    ``kept[i]`` of ``names`` (recording order is preserved).

    ``on_unknown="raise"`` raises ``ValueError`` listing every label that is not in the vocabulary after
    :func:`normalize_channel_name`; ``"drop"`` drops those channels with a warning naming them.
    Two labels that map to the same vocabulary name, or no channel left, raise ``ValueError``.
    Bipolar labels (``"Fp1-F7"``, ``"EEG Fpz-Cz"``) are mapped onto their first electrode with a
    :class:`BipolarChannelWarning` saying that the signal is not referential.
    """
    if on_unknown not in _ON_UNKNOWN:
        raise ValueError(f"on_unknown must be one of {_ON_UNKNOWN}, got {on_unknown!r}")
    names = list(names)
    lookup = {v.lower(): v for v in vocabulary}
    mapped: list[str] = []
    kept: list[int] = []
    unknown: list[str] = []
    first_source: dict[str, str] = {}
    duplicates: list[str] = []
    for i, name in enumerate(names):
        norm = normalize_channel_name(name)
        if norm not in lookup:
            unknown.append(name)
            continue
        target = lookup[norm]
        if target in first_source:
            duplicates.append(f"{first_source[target]!r} and {name!r} -> {target!r}")
            continue
        first_source[target] = name
        mapped.append(target)
        kept.append(i)
    if duplicates:
        raise ValueError(
            "several channels map to the same vocabulary name: " + "; ".join(duplicates)
            + ". Pick or rename channels so that each electrode appears once."
        )
    if unknown:
        if on_unknown == "raise":
            raise ValueError(
                f"{len(unknown)} channel(s) not in the NeuroRVQ channel vocabulary: {unknown}. "
                "Rename them to vocabulary names, or pass on_unknown_channel='drop' "
                "(on_unknown='drop' for map_channel_names) to drop them."
            )
        warnings.warn(
            f"dropping {len(unknown)} channel(s) not in the NeuroRVQ channel vocabulary: {unknown}",
            UserWarning,
            stacklevel=2,
        )
    if not mapped:
        raise ValueError(f"no channel of {names} is in the NeuroRVQ channel vocabulary")
    bipolar = [f"{names[i]!r} -> {target!r}" for target, i in zip(mapped, kept) if is_bipolar(names[i])]
    if bipolar:
        warnings.warn(
            f"bipolar channel(s) {', '.join(bipolar)}: each is the difference of two electrodes, but NeuroRVQ was "
            "trained on referential EEG, so it is encoded as its first electrode and its codes and reconstructions "
            "are out of distribution. Re-reference to single electrodes (e.g. mne.set_eeg_reference) for faithful "
            "codes, or rename or drop the channel to silence this warning",
            BipolarChannelWarning, stacklevel=2)
    return mapped, kept


class BipolarChannelWarning(UserWarning):
    """A bipolar derivation was mapped onto its first electrode (see `map_channel_names`)."""


def channel_indices(names: Sequence[str], vocabulary: Sequence[str] = CHANNEL_VOCABULARY) -> list[int]:
    """Vocabulary index (row of the spatial embedding) of each already-mapped channel name."""
    position = {v: i for i, v in enumerate(vocabulary)}
    unknown = [n for n in names if n not in position]
    if unknown:
        raise ValueError(
            f"channel name(s) not in the vocabulary: {unknown}; map recorded labels with map_channel_names first"
        )
    return [position[n] for n in names]


# The 19-channel 10-20 montage (vocabulary names), the pipeline's `montage="standard_1020"`.
STANDARD_1020 = ["fp1", "fp2", "f7", "f3", "fz", "f4", "f8", "t3", "c3", "cz", "c4", "t4", "t5", "p3", "pz", "p4", "t6",
                 "o1", "o2"]
