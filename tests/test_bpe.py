"""lbm.bpe: sentencepiece BPE over flattened code streams (exact round trip, compression, save/load)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lbm.bpe import CHARACTER_RANGES, CodeBPE, flat_sequences
from lbm.layout import CodeLayout, codes_to_positions, positions_to_flat

# structured data: scale tokens on, small codebook; random data: no scale streams, large codebook (so that
# random pairs are too rare for any merge to pay off)
STRUCTURED = CodeLayout(num_scales=2, num_quantizers=2, codebook_size=64, num_scale_tokens=8)  # M=6, V=272
RANDOM = CodeLayout(num_scales=1, num_quantizers=4, codebook_size=256)  # M=4, V=1024


def random_rows(layout: CodeLayout, n: int, seed: int, channels: int = 4, patches: int = 20) -> list[dict]:
    """Code rows shaped like `load_codes` rows, every code uniform in its stream."""
    g = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        codes = g.integers(0, layout.codebook_size, (layout.num_scales, layout.num_quantizers, channels, patches))
        scale = (g.integers(0, layout.num_scale_tokens, (2, channels, patches)) if layout.has_scale_codes
                 else np.zeros((0, channels, patches)))
        rows.append({"codes": codes.astype(np.int16), "scale_codes": scale.astype(np.int16),
                     "valid_patches": patches})
    return rows


def structured_rows(layout: CodeLayout, n: int, seed: int, channels: int = 4, patches: int = 20,
                    motifs: int = 6) -> list[dict]:
    """Rows whose positions repeat a few fixed code vectors ("motifs"), motif choice persisting over time."""
    g = np.random.default_rng(1234)  # the motif table is shared by every split
    table_codes = g.integers(0, layout.codebook_size, (motifs, layout.num_scales, layout.num_quantizers))
    table_scale = g.integers(0, layout.num_scale_tokens, (motifs, 2))
    g = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        choice = np.empty((channels, patches), dtype=np.int64)
        choice[:, 0] = g.integers(0, motifs, channels)
        for a in range(1, patches):  # mostly keep the previous patch's motif
            change = g.random(channels) < 0.3
            choice[:, a] = np.where(change, g.integers(0, motifs, channels), choice[:, a - 1])
        codes = np.moveaxis(table_codes[choice], (0, 1), (2, 3))  # [C, A, S, K] -> [S, K, C, A]
        scale = np.moveaxis(table_scale[choice], 2, 0)  # [2, C, A]
        valid = int(g.integers(patches // 2, patches + 1))
        rows.append({"codes": codes.astype(np.int16), "scale_codes": scale.astype(np.int16), "valid_patches": valid})
    return rows


@pytest.fixture(scope="module")
def structured_bpe() -> CodeBPE:
    return CodeBPE.train(flat_sequences(structured_rows(STRUCTURED, 40, seed=0), STRUCTURED), 272 + 200, STRUCTURED)


@pytest.fixture(scope="module")
def random_bpe() -> CodeBPE:
    return CodeBPE.train(flat_sequences(random_rows(RANDOM, 40, seed=0), RANDOM), 1024 + 200, RANDOM)


def assert_round_trip(bpe: CodeBPE, tokens: torch.Tensor) -> list[int]:
    ids = bpe.encode(tokens)
    assert all(0 < i < bpe.vocab_size for i in ids)  # never <unk> (id 0)
    back = bpe.decode(ids)
    assert back.dtype == torch.long and torch.equal(back, tokens.long())
    assert int(bpe.piece_lengths[ids].sum()) == len(tokens)
    return ids


def test_round_trip_random_and_structured(structured_bpe, random_bpe):
    for seed in (1, 2):
        for tokens in flat_sequences(structured_rows(STRUCTURED, 5, seed=seed), STRUCTURED):
            assert_round_trip(structured_bpe, tokens)
        for tokens in flat_sequences(random_rows(RANDOM, 5, seed=seed), RANDOM):
            assert_round_trip(random_bpe, tokens)
    # any order of tokens, ndarray and list inputs, and the empty sequence
    tokens = torch.randint(0, STRUCTURED.vocab_size, (3000,), generator=torch.Generator().manual_seed(0))
    assert_round_trip(structured_bpe, tokens)
    assert structured_bpe.encode(tokens.numpy().astype(np.int16)) == structured_bpe.encode(tokens.tolist())
    assert structured_bpe.encode(torch.empty(0, dtype=torch.long)) == []
    assert structured_bpe.decode([]).shape == (0,)


def test_codes_unseen_in_training_round_trip_exactly(structured_bpe):
    seen = set()
    for tokens in flat_sequences(structured_rows(STRUCTURED, 40, seed=0), STRUCTURED):
        seen.update(tokens.tolist())
    unseen = torch.tensor(sorted(set(range(STRUCTURED.vocab_size)) - seen))
    assert len(unseen) > 200  # the motif data uses only a few codes
    ids = assert_round_trip(structured_bpe, unseen)
    assert len(ids) == len(unseen)  # no merges for never-seen tokens: one base piece each
    # unseen codes mixed into structured data, and random rows of the structured layout
    mixed = next(iter(flat_sequences(structured_rows(STRUCTURED, 1, seed=5), STRUCTURED))).clone()
    mixed[::7] = unseen[: len(mixed[::7])]
    assert_round_trip(structured_bpe, mixed)
    for tokens in flat_sequences(random_rows(STRUCTURED, 3, seed=9), STRUCTURED):
        assert_round_trip(structured_bpe, tokens)


def test_compression_ratio_structured_vs_random(structured_bpe, random_bpe):
    structured = structured_bpe.compression_ratio(flat_sequences(structured_rows(STRUCTURED, 20, seed=7), STRUCTURED))
    uniform = random_bpe.compression_ratio(flat_sequences(random_rows(RANDOM, 20, seed=7), RANDOM))
    print(f"compression ratio: structured {structured:.3f}, uniform random {uniform:.3f}")
    assert structured > 2.0
    assert 1.0 <= uniform < 1.05
    with pytest.raises(ValueError):
        structured_bpe.compression_ratio([])


def test_save_load_gives_identical_encodings(structured_bpe, tmp_path):
    model_path = structured_bpe.save(tmp_path / "bpe")
    assert model_path == tmp_path / "bpe.model" and (tmp_path / "bpe.json").is_file()
    info = json.loads((tmp_path / "bpe.json").read_text())
    assert info["first_codepoint"] == CHARACTER_RANGES["cjk"][0]
    assert info["token_vocab_size"] == STRUCTURED.vocab_size
    assert info["stream_offsets"] == STRUCTURED.offsets().tolist()
    for path in (tmp_path / "bpe", model_path):
        loaded = CodeBPE.load(path)
        assert loaded.layout == STRUCTURED and loaded.vocab_size == structured_bpe.vocab_size
        for tokens in flat_sequences(structured_rows(STRUCTURED, 4, seed=3), STRUCTURED):
            assert loaded.encode(tokens) == structured_bpe.encode(tokens)
            assert torch.equal(loaded.decode(structured_bpe.encode(tokens)), tokens)
    (tmp_path / "bpe.json").write_text(json.dumps({**info, "model_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="checksum"):
        CodeBPE.load(tmp_path / "bpe")


def test_vocabulary_must_fit_the_character_range():
    too_big = CodeLayout(num_scales=1, num_quantizers=4, codebook_size=8192)  # 32768 > 20992 CJK ideographs
    with pytest.raises(ValueError, match="does not fit"):
        CodeBPE.train([torch.arange(10)], too_big.vocab_size + 100, too_big)
    with pytest.raises(ValueError, match="does not fit"):
        CodeBPE.train([torch.arange(10)], 70000, 65535, charset="pua")
    with pytest.raises(ValueError, match="charset"):
        CodeBPE.train([torch.arange(10)], 100, 20, charset="latin")
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        CodeBPE.train([torch.arange(10)], 20, 20)  # no room for <unk>


def test_pua_charset_and_no_merge_model():
    bpe = CodeBPE.train([torch.arange(12).repeat(30)], 12 + 1 + 20, 12, charset="pua", max_sentencepiece_length=4)
    tokens = torch.arange(12).repeat(5)
    ids = assert_round_trip(bpe, tokens)
    assert len(ids) == 15 and int(bpe.piece_lengths.max()) == 4
    plain = CodeBPE.train([torch.arange(12).repeat(30)], 13, 12)  # base pieces only
    assert plain.encode(tokens) == [plain.encode([t])[0] for t in tokens.tolist()]
    chunked = CodeBPE.train([torch.arange(12).repeat(30)], 40, 12, max_train_length=16)  # 360 tokens, 16 a chunk
    assert_round_trip(chunked, tokens)
    assert chunked.compression_ratio([tokens]) > 2


def test_invalid_inputs(structured_bpe):
    with pytest.raises(ValueError, match="outside the flattened vocabulary"):
        structured_bpe.encode(torch.tensor([0, STRUCTURED.vocab_size]))
    with pytest.raises(ValueError, match="outside the flattened vocabulary"):
        structured_bpe.encode([-1])
    with pytest.raises(ValueError, match="integers"):
        structured_bpe.encode(torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[N\]"):
        structured_bpe.encode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="not a code piece"):
        structured_bpe.decode([structured_bpe.encode([1])[0], 0])  # 0 is <unk>
    with pytest.raises(ValueError, match="BPE ids must lie"):
        structured_bpe.decode([structured_bpe.vocab_size])
    with pytest.raises(ValueError, match="outside the flattened vocabulary"):
        CodeBPE.train([torch.tensor([0, 5, 99])], 60, 50)
    with pytest.raises(ValueError, match="sets"):
        CodeBPE.train([torch.arange(10)], 30, 10, split_by_whitespace=True)


def test_flat_sequences_uses_the_layout_and_real_patches_only():
    rows = structured_rows(STRUCTURED, 3, seed=4)
    sequences = flat_sequences(rows, STRUCTURED)
    assert len(sequences) == 3
    for row, tokens in zip(rows, sequences):
        positions = codes_to_positions(torch.as_tensor(row["codes"])[None], torch.as_tensor(row["scale_codes"])[None])
        channels = row["codes"].shape[2]
        expected = positions_to_flat(positions[:, : row["valid_patches"] * channels], STRUCTURED.offsets())[0]
        assert torch.equal(tokens, expected) and len(tokens) == row["valid_patches"] * channels * 6
    assert [len(t) for t in sequences] == [len(t) for t in sequences]  # re-iterable
    # rows without scale codes (empty [0][C][A]) for a layout without scale streams
    rows = random_rows(RANDOM, 2, seed=4, channels=3, patches=5)
    rows[1]["valid_patches"] = 0
    assert [len(t) for t in flat_sequences(rows, RANDOM)] == [3 * 5 * 4, 0]
    with pytest.raises(ValueError, match="scale"):
        list(flat_sequences(rows, CodeLayout(1, 4, 256, num_scale_tokens=4)))
    with pytest.raises(ValueError, match="scale"):
        list(flat_sequences(structured_rows(STRUCTURED, 1, seed=0), CodeLayout(2, 2, 64)))
    with pytest.raises(ValueError, match="codes must be"):
        list(flat_sequences(rows, CodeLayout(2, 2, 256)))
    bad = random_rows(RANDOM, 1, seed=0)
    bad[0]["codes"][0, 0, 0, 0] = 256
    with pytest.raises(ValueError, match="outside its stream"):
        list(flat_sequences(bad, RANDOM))
