"""Fast nearest-codeword searches give exactly the codes of the straightforward search (the released formulation:
argmin of |z|^2 + |w|^2 - 2 z.w over the whole [N, K] distance matrix), for both token designs, on random and real
EEG; the opt-in bf16-rescore search gives the same codes; the cached codeword norms follow codebook updates."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQFeatureExtractor, NeuroRVQTokenizer, load_official, quantization
from neurorvq.tokenizer.quantization import EMACodebook, ResidualVectorQuantizer, reference_nearest

from .conftest import REPO_ROOT

OFFICIAL = REPO_ROOT / "configs" / "tokenizer" / "official-eeg-v1.json"
TINY = REPO_ROOT / "configs" / "tokenizer" / "tiny.json"
EEG_FILES = ["eegmat/Subject01_2.edf", "eegmat/Subject02_2.edf"]


@pytest.fixture(autouse=True)
def bf16_rescore_on_every_codebook(monkeypatch):
    """By default bf16-rescore searches small codebooks exactly (no gain there): test its algorithm on all sizes."""
    monkeypatch.setattr(quantization, "BF16_MIN_WORK", 0)


def stage_with(codebook: torch.Tensor, normalize: bool) -> EMACodebook:
    stage = EMACodebook(codebook.shape[0], codebook.shape[1], normalize, decay=0.99, kmeans_iters=1)
    stage.codebook.copy_(codebook)
    return stage


def random_case(rows: int, size: int, dim: int, normalize: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    codebook = torch.randn(size, dim, generator=generator)
    vectors = 3 * torch.randn(rows, dim, generator=generator)
    if normalize:
        codebook, vectors = F.normalize(codebook, dim=-1), F.normalize(vectors, dim=-1)
    codebook[size // 2] = codebook[1]  # an exact duplicate: ties go to the first index
    if rows > 3:
        vectors[3] = codebook[1]
    return vectors, codebook


@pytest.mark.parametrize("precision", ["exact", "bf16-rescore"])
@pytest.mark.parametrize("rows,size,dim,normalize", [
    (1, 64, 16, True), (3, 64, 16, True), (7, 512, 24, False), (300, 1024, 128, True), (1100, 1024, 64, True),
    (1100, 512, 140, False), (700, 512, 4, False), (520, 64, 16, True),
])
def test_search_equals_reference_on_random_vectors(rows, size, dim, normalize, precision):
    vectors, codebook = random_case(rows, size, dim, normalize, seed=rows + dim)
    stage = stage_with(codebook, normalize)
    assert torch.equal(stage.nearest(vectors, precision), reference_nearest(vectors, codebook))


@pytest.mark.parametrize("block_rows", [6, 16, 100])
def test_exact_search_is_blockwise_exact(block_rows):
    """Every block size (all blocks but a single one have >= block_rows rows) gives the reference's distances."""
    vectors, codebook = random_case(1000, 2048, 128, True, seed=block_rows)
    norms = codebook.pow(2).sum(dim=1)
    expected = reference_nearest(vectors, codebook)
    assert torch.equal(quantization._exact_search(vectors, codebook, norms, block_rows), expected)
    stage = stage_with(codebook, True)
    indices, _ = quantization._bf16_rescore_search(vectors, codebook, stage._search_state(), block_rows=block_rows,
                                                   normalized=True)
    assert torch.equal(indices, expected)


def test_rescoring_dot_products_are_those_of_the_fp32_matrix_product():
    """What makes bf16-rescore exact: its fp32 dot products are bitwise those of the search's matrix product."""
    vectors, codebook = random_case(600, 4096, 128, True)
    rows = torch.arange(600).repeat_interleave(8)
    codes = torch.randint(0, 4096, (600 * 8,), generator=torch.Generator().manual_seed(1))
    dots = quantization._exact_pair_dots(vectors, codebook, rows, codes)
    assert torch.equal(dots, (vectors @ codebook.t())[rows, codes])


def test_bf16_rescore_falls_back_on_uncertain_rows():
    """A zero vector ties every code: no candidate set is certain, the row is searched exactly (first code)."""
    vectors, codebook = random_case(64, 1024, 32, True)
    vectors[5] = 0
    stage = stage_with(codebook, True)
    indices = stage.nearest(vectors, "bf16-rescore")
    assert stage.fallback_rows >= 1
    assert torch.equal(indices, reference_nearest(vectors, codebook))


def test_bf16_rescore_searches_small_codebooks_exactly(monkeypatch):
    monkeypatch.setattr(quantization, "BF16_MIN_WORK", 2048 * 64)
    vectors, codebook = random_case(100, 512, 16, True)
    stage = stage_with(codebook, True)
    assert torch.equal(stage.nearest(vectors, "bf16-rescore"), reference_nearest(vectors, codebook))
    assert stage.fallback_rows == 100


def test_search_precision_is_checked_and_exact_by_default():
    quantizer = ResidualVectorQuantizer(2, 16, 8)
    assert quantizer.search_precision == "exact"
    with pytest.raises(ValueError, match="search_precision"):
        quantizer.encode(torch.randn(4, 8), search_precision="fp16")
    with pytest.raises(ValueError, match="search_precision"):
        quantizer.stages[0].nearest(torch.randn(4, 8), "approximate")


# ---- the cache of codeword norms ------------------------------------------------------------------


def test_cached_norms_follow_codebook_writes():
    vectors, codebook = random_case(200, 256, 32, False)
    stage = stage_with(codebook, False)
    assert torch.equal(stage.nearest(vectors), reference_nearest(vectors, stage.codebook))
    cache = stage._search_cache
    assert stage.nearest(vectors) is not None and stage._search_cache is cache  # reused while unchanged

    stage.codebook.mul_(2).add_(0.5)  # in-place write
    assert torch.equal(stage.nearest(vectors), reference_nearest(vectors, stage.codebook))
    stage.codebook[:10] = -stage.codebook[:10]  # index assignment
    assert torch.equal(stage.nearest(vectors, "bf16-rescore"), reference_nearest(vectors, stage.codebook))
    stage.load_state_dict({**stage.state_dict(), "codebook": torch.randn(256, 32)})  # loading weights
    assert torch.equal(stage.nearest(vectors), reference_nearest(vectors, stage.codebook))
    stage.codebook = torch.randn(256, 32)  # a new tensor (e.g. .to(device))
    assert torch.equal(stage.nearest(vectors), reference_nearest(vectors, stage.codebook))
    stage.codebook.data.copy_(torch.randn(256, 32))  # .data writes bypass the version counter: clear by hand
    stage.clear_search_cache()
    assert torch.equal(stage.nearest(vectors), reference_nearest(vectors, stage.codebook))


def reference_chain(codebooks: list[torch.Tensor], vectors: torch.Tensor, normalize: bool) -> torch.Tensor:
    """The released residual loop with the straightforward search over the given codebooks: codes [K, N]."""
    residual, codes = vectors.float(), []
    for codebook in codebooks:
        target = F.normalize(residual, dim=-1) if normalize else residual
        codes.append(reference_nearest(target, codebook))
        residual = residual - codebook[codes[-1]]
    return torch.stack(codes)


def test_modules_with_a_cache_copy_and_pickle():
    vectors, codebook = random_case(100, 256, 32, True)
    stage = stage_with(codebook, True)
    stage.nearest(vectors, "bf16-rescore")
    assert stage._search_cache is not None
    for clone in (copy.deepcopy(stage), pickle.loads(pickle.dumps(stage))):
        assert clone._search_cache is None
        assert torch.equal(clone.nearest(vectors), reference_nearest(vectors, codebook))


def test_cached_norms_follow_ema_training_updates():
    torch.manual_seed(0)
    quantizer = ResidualVectorQuantizer(2, 32, 8, quantizer_type="official", kmeans_iters=2).train()
    quantizer(torch.randn(128, 8))  # k-means initialisation
    for _ in range(3):
        vectors = torch.randn(128, 8)
        before = [stage.codebook.clone() for stage in quantizer.stages]
        # every stage searches its codebook as it was before this step's EMA update
        assert torch.equal(quantizer(vectors).codes, reference_chain(before, vectors, normalize=True))
        assert not torch.equal(before[0], quantizer.stages[0].codebook)  # the EMA moved it
    quantizer.eval()
    vectors = torch.randn(64, 8)
    expected = reference_chain([stage.codebook for stage in quantizer.stages], vectors, normalize=True)
    assert torch.equal(quantizer.encode(vectors), expected)
    assert torch.equal(quantizer.encode(vectors, search_precision="bf16-rescore"), expected)


# ---- both token designs, real EEG -----------------------------------------------------------------


def reference_codes(quantizer: ResidualVectorQuantizer, vectors: torch.Tensor) -> torch.Tensor:
    return reference_chain([stage.codebook for stage in quantizer.stages], vectors, quantizer.normalize)


@pytest.fixture(scope="module")
def real_windows(eeg_dir):
    features = NeuroRVQFeatureExtractor()([str(eeg_dir / f) for f in EEG_FILES], return_tensors="pt",
                                          window_patches=13)
    keep = features["padding_mask"].bool().all(dim=(1, 2))
    return features["input_values"][keep], features["channel_names"]


def released_design_check(model: NeuroRVQTokenizer, x: torch.Tensor, names) -> None:
    exact = model.encode(x, names)
    with torch.no_grad():
        latents = model.encoder(x, model.channel_indices(names, x.shape[0], x.shape[1]), None)
    for s, quantizer in enumerate(model.quantizers):
        expected = reference_codes(quantizer, latents[s].reshape(-1, latents.shape[-1]))
        assert torch.equal(exact.codes[:, s].permute(1, 0, 2, 3).reshape(expected.shape), expected), f"scale {s}"
    rescored = model.encode(x, names, search_precision="bf16-rescore")
    agreement = float((rescored.codes == exact.codes).float().mean())
    # identical by construction (bf16 candidates, exact rescoring, exact search where not provably enough)
    assert agreement == 1.0, f"bf16-rescore agreement {agreement:.6f}"


def test_released_design_parity_model_on_real_eeg(parity_dir, real_windows):
    x, names = real_windows
    model = load_official(parity_dir / "official_state_dict.safetensors")
    released_design_check(model, x[:8, :, :4 * 200], names)  # the fixture's model takes up to 256 tokens


def test_released_eeg_v1_sizes_on_real_eeg(real_windows):
    """4 scales x 8 stages x 8192 codes of 128, unit random codebooks, on two real 19 x 13 s windows."""
    x, names = real_windows
    torch.manual_seed(0)
    model = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(OFFICIAL))).eval()
    with torch.no_grad():
        for quantizer in model.quantizers:
            for stage in quantizer.stages:
                stage.codebook.copy_(F.normalize(torch.randn_like(stage.codebook), dim=-1))
    released_design_check(model, x[:2], names)


def test_trained_tiny_model_encode_matches_reference(real_windows):
    """Codebooks from k-means and an EMA step (duplicated means and all), in forward and in encode."""
    x, names = real_windows
    torch.manual_seed(0)
    config = NeuroRVQConfig.from_json_file(str(TINY))
    model = NeuroRVQTokenizer(config).train()
    channels = x[:4, :8, :800]
    model(channels, names[:8])
    model.eval()
    released_design_check(model, channels, names[:8])
    with torch.no_grad():
        forward_codes = model(channels, names[:8]).codes
    assert torch.equal(forward_codes, model.encode(channels, names[:8]).codes)


def test_mdct_design_bundled_model_on_real_eeg(real_windows):
    x, names = real_windows
    model = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small").eval()
    exact = model.encode(x[:4], names)
    shapes, _ = model.mdct_shapes(model.transform(x[:4]))
    for s, ((low, high), quantizer) in enumerate(zip(model._bands(), model.quantizers)):
        expected = reference_codes(quantizer, shapes[..., low:high].reshape(-1, high - low))
        assert torch.equal(exact.codes[:, s].permute(1, 0, 2, 3).reshape(expected.shape), expected), f"band {s}"
    rescored = model.encode(x[:4], names, search_precision="bf16-rescore")
    assert torch.equal(rescored.codes, exact.codes)
    assert torch.equal(rescored.scale_codes, exact.scale_codes)
