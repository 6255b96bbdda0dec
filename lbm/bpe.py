"""Optional sequence compression of flattened code streams with a sentencepiece BPE.

An LBM sequence is a run of flattened tokens (`layout.positions_to_flat`: token = stream offset + code,
vocabulary `CodeLayout.vocab_size`). [`CodeBPE`] learns byte-pair merges over such runs so that a
recurring group of tokens (say the coarse stages of a frequent patch shape) becomes one BPE id, and maps
back exactly.

How it works:

- Every flattened token t becomes one Unicode character, `chr(first + t)`, from a character range that
  holds no whitespace, control, combining or normalisation-sensitive characters (`CHARACTER_RANGES`):
  the CJK Unified Ideographs U+4E00..U+9FFF (20,992 tokens, the default) or the supplementary private use
  area A U+F0000..U+FFFFD (65,534 tokens). A vocabulary larger than the range raises `ValueError`.
- A sequence is the string of its characters, and sentencepiece trains a plain BPE on those strings with
  every text-specific behaviour off: no normalisation (`identity`), no whitespace handling, no dummy
  prefix, no script/number splitting, no byte fallback, `character_coverage=1.0`.
- **Every token of the vocabulary is a base piece, whether or not the training data uses it.** The
  trainer is fed, besides the data, one extra one-character sentence per token of the vocabulary: a
  one-character sentence adds no pair counts, so it cannot bias the merges, but with full character
  coverage it puts the character in the model. (The alternative, `user_defined_symbols`, makes every
  character an unbreakable user symbol and interferes with merging, so it is not used.) Hence codes never
  seen in training still encode, as single-token pieces, and every round trip is exact. BPE id 0 is
  `<unk>`; `encode` never produces it (tokens outside the vocabulary are a `ValueError` first) and
  `decode` refuses it. There are no BOS/EOS/PAD pieces.
- Training sequences longer than `max_train_length` tokens are cut into chunks of that length
  (sentencepiece bounds the length of a training sentence); encoding has no length limit.

BPE vocabulary = 1 (`<unk>`) + the flattened vocabulary (base pieces) + the learnt merges, so `vocab_size`
must be larger than `token_vocab_size`. The trainer treats it as an upper bound (`hard_vocab_limit=False`):
with little data it may learn fewer merges.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .layout import CodeLayout, codes_to_positions, positions_to_flat

# name -> (first code point, last code point), inclusive. Neither range holds whitespace, control,
# combining or compatibility characters, so sentencepiece with identity normalisation keeps every
# character as is.
CHARACTER_RANGES: dict[str, tuple[int, int]] = {
    "cjk": (0x4E00, 0x9FFF),  # CJK Unified Ideographs, 20,992 characters
    "pua": (0xF0000, 0xFFFFD),  # Supplementary Private Use Area-A, 65,534 characters
}

_FORMAT = "neurorvq-code-bpe"
_FORMAT_VERSION = 1


def _as_int_array(tokens, name: str = "tokens") -> np.ndarray:
    """A 1-D integer sequence (LongTensor, ndarray, list) -> int64 ndarray [N]."""
    if isinstance(tokens, torch.Tensor):
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise ValueError(f"{name} must hold integers, got {tokens.dtype}")
        array = tokens.detach().cpu().numpy()
    else:
        array = np.asarray(tokens)
        if array.size == 0:
            array = array.astype(np.int64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one sequence [N], got shape {tuple(array.shape)}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got {array.dtype}")
    return array.astype(np.int64, copy=False)


class CodeBPE:
    """A sentencepiece BPE over flattened code tokens (see the module docstring).

    Build one with [`CodeBPE.train`] or [`CodeBPE.load`]; `encode` maps flat tokens [N] to BPE ids,
    `decode` maps them back exactly.
    """

    def __init__(self, model_proto: bytes, token_vocab_size: int, charset: str = "cjk",
                 layout: CodeLayout | None = None):
        import sentencepiece as spm

        self.token_vocab_size = self._check_vocab(token_vocab_size, charset)
        self.charset = charset
        self.first_codepoint = CHARACTER_RANGES[charset][0]
        self.layout = layout
        if layout is not None and layout.vocab_size != self.token_vocab_size:
            raise ValueError(f"layout vocabulary {layout.vocab_size} != token_vocab_size {self.token_vocab_size}")
        self.model_proto = bytes(model_proto)
        self.processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        # flat tokens per BPE id (0 for <unk>/control), and which ids decode
        lengths, decodable = [], []
        for i in range(self.processor.get_piece_size()):
            special = self.processor.is_unknown(i) or self.processor.is_control(i) or self.processor.is_unused(i)
            piece = self.processor.id_to_piece(i)
            ok = not special and all(0 <= ord(ch) - self.first_codepoint < self.token_vocab_size for ch in piece)
            lengths.append(len(piece) if ok else 0)
            decodable.append(ok)
        self._piece_lengths = torch.tensor(lengths, dtype=torch.long)
        self._decodable = np.asarray(decodable, dtype=bool)
        base = np.array([self.processor.piece_to_id(self._to_text(np.array([t]))) for t in range(self.token_vocab_size)])
        if not self._decodable[base].all():
            raise ValueError("the sentencepiece model lacks base pieces for some tokens of the vocabulary")

    # ------------------------------------------------------------------------------------------------
    # vocabulary and characters
    # ------------------------------------------------------------------------------------------------

    @staticmethod
    def _check_vocab(token_vocab_size, charset: str) -> int:
        if charset not in CHARACTER_RANGES:
            raise ValueError(f"charset must be one of {sorted(CHARACTER_RANGES)}, got {charset!r}")
        if isinstance(token_vocab_size, bool) or not isinstance(token_vocab_size, (int, np.integer)) \
                or token_vocab_size <= 0:
            raise ValueError(f"token_vocab_size must be a positive integer, got {token_vocab_size!r}")
        first, last = CHARACTER_RANGES[charset]
        capacity = last - first + 1
        if token_vocab_size > capacity:
            hint = " (charset='pua' holds 65,534)" if charset == "cjk" and token_vocab_size <= 65534 else ""
            raise ValueError(f"a flattened vocabulary of {token_vocab_size} tokens does not fit the {charset!r} "
                             f"character range U+{first:04X}..U+{last:04X} ({capacity} characters){hint}")
        return int(token_vocab_size)

    @property
    def vocab_size(self) -> int:
        """Number of BPE ids (including `<unk>` at id 0, which `encode` never produces)."""
        return self.processor.get_piece_size()

    @property
    def piece_lengths(self) -> torch.LongTensor:
        """[vocab_size]: how many flat tokens each BPE id stands for (0 for `<unk>`)."""
        return self._piece_lengths.clone()

    def _check_tokens(self, tokens) -> np.ndarray:
        array = _as_int_array(tokens)
        if array.size and (array.min() < 0 or array.max() >= self.token_vocab_size):
            bad = array[(array < 0) | (array >= self.token_vocab_size)][0]
            raise ValueError(f"token {int(bad)} lies outside the flattened vocabulary [0, {self.token_vocab_size})")
        return array

    def _to_text(self, tokens: np.ndarray) -> str:
        return (tokens + self.first_codepoint).astype("<u4").tobytes().decode("utf-32-le")

    def _from_text(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64) - self.first_codepoint

    def tokens_to_text(self, tokens) -> str:
        """Flat tokens [N] -> the string of N characters the BPE model sees."""
        return self._to_text(self._check_tokens(tokens))

    # ------------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, sequences: Iterable, vocab_size: int, token_vocab_size: int | CodeLayout, *,
              max_sentencepiece_length: int = 16, charset: str = "cjk", max_train_length: int = 8192,
              num_threads: int = 1, **trainer_options) -> "CodeBPE":
        """Train a BPE on flattened token sequences.

        Args:
            sequences: iterable of 1-D flat token sequences (LongTensor / ndarray / list), read once;
                empty ones are skipped.
            vocab_size: BPE vocabulary size (upper bound): 1 (`<unk>`) + `token_vocab_size` base pieces +
                merges, so it must exceed `token_vocab_size`.
            token_vocab_size: size of the flattened vocabulary, or the `CodeLayout` (its `vocab_size`;
                the layout is then saved with the model).
            max_sentencepiece_length: longest piece, in flat tokens.
            charset: character range of the token -> character map (`CHARACTER_RANGES`).
            max_train_length: training sequences are cut into chunks of at most this many tokens.
            num_threads: sentencepiece trainer threads.
            **trainer_options: further `SentencePieceTrainer.train` options (e.g. `input_sentence_size`);
                they cannot override the settings the exact round trip relies on.
        """
        import sentencepiece as spm

        layout = token_vocab_size if isinstance(token_vocab_size, CodeLayout) else None
        vocab = cls._check_vocab(layout.vocab_size if layout is not None else token_vocab_size, charset)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size <= vocab:
            raise ValueError(f"vocab_size must exceed the flattened vocabulary ({vocab}) by at least 1 (for <unk>), "
                             f"got {vocab_size!r}")
        if isinstance(max_sentencepiece_length, bool) or not isinstance(max_sentencepiece_length, int) \
                or max_sentencepiece_length < 1:
            raise ValueError(f"max_sentencepiece_length must be a positive integer, got {max_sentencepiece_length!r}")
        if max_train_length < max(2, max_sentencepiece_length):
            raise ValueError(f"max_train_length must be at least max(2, max_sentencepiece_length), got {max_train_length}")
        fixed = dict(
            model_type="bpe", vocab_size=int(vocab_size), character_coverage=1.0,
            split_by_unicode_script=False, split_by_number=False, split_by_whitespace=False, split_digits=False,
            add_dummy_prefix=False, byte_fallback=False, normalization_rule_name="identity",
            remove_extra_whitespaces=False, max_sentencepiece_length=max_sentencepiece_length,
            max_sentence_length=4 * max_train_length + 16, hard_vocab_limit=False,
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, user_defined_symbols=[], control_symbols=[],
        )
        clash = sorted(set(trainer_options) & (set(fixed) | {"sentence_iterator", "model_writer", "input"}))
        if clash:
            raise ValueError(f"CodeBPE.train sets {clash} itself")
        first = CHARACTER_RANGES[charset][0]
        counted = [0]

        def sentences() -> Iterator[str]:
            for sequence in sequences:
                array = _as_int_array(sequence, "a training sequence")
                if array.size and (array.min() < 0 or array.max() >= vocab):
                    raise ValueError(f"a training sequence holds tokens outside the flattened vocabulary [0, {vocab})")
                for start in range(0, array.size, max_train_length):
                    chunk = array[start:start + max_train_length]
                    counted[0] += chunk.size
                    yield (chunk + first).astype("<u4").tobytes().decode("utf-32-le")
            for token in range(vocab):  # every base character, alone: no pair counts, full coverage
                yield chr(first + token)

        writer = io.BytesIO()
        options = {"minloglevel": 2, "num_threads": num_threads, **trainer_options, **fixed}
        spm.SentencePieceTrainer.train(sentence_iterator=sentences(), model_writer=writer, **options)
        if not counted[0]:
            raise ValueError("no training tokens: every training sequence was empty")
        return cls(writer.getvalue(), vocab, charset=charset, layout=layout)

    # ------------------------------------------------------------------------------------------------
    # encode / decode
    # ------------------------------------------------------------------------------------------------

    def encode(self, flat_tokens) -> list[int]:
        """Flat tokens [N] (LongTensor / ndarray / list) -> BPE ids (never `<unk>`)."""
        array = self._check_tokens(flat_tokens)
        if not array.size:
            return []
        return self.processor.encode(self._to_text(array), out_type=int)

    def decode(self, ids) -> torch.LongTensor:
        """BPE ids -> flat tokens [N], the exact inverse of `encode`.

        Raises `ValueError` for an id outside the vocabulary or one that is not a code piece (`<unk>`).
        """
        array = _as_int_array(ids, "ids")
        if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
            raise ValueError(f"BPE ids must lie in [0, {self.vocab_size}), got {int(array.min())}..{int(array.max())}")
        if not self._decodable[array].all():
            bad = int(array[~self._decodable[array]][0])
            raise ValueError(f"BPE id {bad} ({self.processor.id_to_piece(bad)!r}) is not a code piece")
        text = "".join(self.processor.id_to_piece(int(i)) for i in array)
        return torch.from_numpy(self._from_text(text))

    def compression_ratio(self, sequences: Iterable) -> float:
        """Flat tokens per BPE id over `sequences` (total tokens / total ids)."""
        tokens = ids = 0
        for sequence in sequences:
            array = self._check_tokens(sequence)
            tokens += array.size
            ids += len(self.encode(array))
        if not ids:
            raise ValueError("compression_ratio needs at least one non-empty sequence")
        return tokens / ids

    # ------------------------------------------------------------------------------------------------
    # save / load
    # ------------------------------------------------------------------------------------------------

    @staticmethod
    def _paths(path: str | Path) -> tuple[Path, Path]:
        path = Path(path)
        model = path if path.suffix in (".model", ".json") else path.with_name(path.name + ".model")
        return model.with_suffix(".model"), model.with_suffix(".json")

    def save(self, path: str | Path) -> Path:
        """Write `<path>.model` (the sentencepiece model) and `<path>.json` (character map, vocabulary,
        layout). `path` may end in `.model`. Returns the `.model` path."""
        model_path, info_path = self._paths(path)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model_path.write_bytes(self.model_proto)
        info = {
            "format": _FORMAT, "version": _FORMAT_VERSION, "charset": self.charset,
            "first_codepoint": self.first_codepoint, "token_vocab_size": self.token_vocab_size,
            "bpe_vocab_size": self.vocab_size, "model_sha256": hashlib.sha256(self.model_proto).hexdigest(),
            "layout": asdict(self.layout) if self.layout is not None else None,
            "stream_offsets": self.layout.offsets().tolist() if self.layout is not None else None,
        }
        info_path.write_text(json.dumps(info, indent=1))
        return model_path

    @classmethod
    def load(cls, path: str | Path) -> "CodeBPE":
        """Read a model written by `save` (`path` with or without the `.model` suffix)."""
        model_path, info_path = cls._paths(path)
        if not model_path.is_file() or not info_path.is_file():
            raise ValueError(f"{model_path} and {info_path} must both exist (written by CodeBPE.save)")
        info = json.loads(info_path.read_text())
        if info.get("format") != _FORMAT or info.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{info_path} is not a {_FORMAT} v{_FORMAT_VERSION} file")
        proto = model_path.read_bytes()
        if hashlib.sha256(proto).hexdigest() != info["model_sha256"]:
            raise ValueError(f"{model_path} does not match {info_path} (checksum differs)")
        if CHARACTER_RANGES.get(info["charset"], (None,))[0] != info["first_codepoint"]:
            raise ValueError(f"{info_path}: character range {info['charset']!r} does not start at "
                             f"U+{info['first_codepoint']:04X}")
        layout = CodeLayout(**info["layout"]) if info.get("layout") else None
        return cls(proto, info["token_vocab_size"], charset=info["charset"], layout=layout)


# ----------------------------------------------------------------------------------------------------
# code-dataset rows -> flat sequences
# ----------------------------------------------------------------------------------------------------


def _row_to_flat(row: dict, layout: CodeLayout) -> torch.LongTensor:
    codes = torch.as_tensor(np.asarray(row["codes"], dtype=np.int64))
    if codes.dim() != 4 or tuple(codes.shape[:2]) != (layout.num_scales, layout.num_quantizers):
        raise ValueError(f"codes must be [S={layout.num_scales}][K={layout.num_quantizers}][C][A], "
                         f"got shape {tuple(codes.shape)}")
    scale = np.asarray(row.get("scale_codes", []), dtype=np.int64)
    scale_codes = torch.as_tensor(scale)[None] if scale.size else None
    if layout.has_scale_codes != (scale_codes is not None):
        raise ValueError("the layout " + ("expects scale codes but a row has none" if layout.has_scale_codes
                                          else "has no scale streams but a row holds scale codes"))
    positions = codes_to_positions(codes[None], scale_codes)  # [1, A*C, M], time-major
    num_channels, num_patches = codes.shape[-2], codes.shape[-1]
    valid = int(row.get("valid_patches", num_patches))
    if not 0 <= valid <= num_patches:
        raise ValueError(f"valid_patches {valid} outside [0, {num_patches}]")
    positions = positions[:, : valid * num_channels]
    sizes = torch.tensor(layout.stream_vocab_sizes)
    if positions.numel() and ((positions < 0).any() or (positions >= sizes).any()):
        raise ValueError("a row holds a code outside its stream's vocabulary")
    return positions_to_flat(positions, layout.offsets())[0]


class FlatSequences:
    """Re-iterable view of code rows as flat token sequences (see [`flat_sequences`])."""

    def __init__(self, code_rows, layout: CodeLayout):
        self.code_rows, self.layout = code_rows, layout

    def __iter__(self) -> Iterator[torch.LongTensor]:
        for row in self.code_rows:
            yield _row_to_flat(row, self.layout)

    def __len__(self) -> int:
        return len(self.code_rows)


def flat_sequences(code_rows, layout: CodeLayout) -> FlatSequences:
    """Code-dataset rows (`codes` [S][K][C][A], `scale_codes` [2][C][A] or empty, `valid_patches`) -> one
    flat token sequence [valid_patches * C * M] per row (real patches only, possibly empty), built with
    `codes_to_positions` + `positions_to_flat`.

    Lazy and re-iterable when `code_rows` is (a list, a `datasets.Dataset` from `load_codes`); `len()`
    works when `code_rows` has one. Raises `ValueError` when a row does not match `layout`.
    """
    return FlatSequences(code_rows, layout)


__all__ = ["CHARACTER_RANGES", "CodeBPE", "FlatSequences", "flat_sequences"]
