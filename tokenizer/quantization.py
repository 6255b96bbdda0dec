"""Residual vector quantization with EMA codebooks, k-means initialisation and process synchronisation.

Two kinds share one module:

- `official` (as released): every stage L2-normalises its incoming residual r, takes the nearest unit
  codeword c, outputs c (straight-through to the normalised r) and hands on r - c. Codebooks are updated
  by a normalised EMA of the mean of their assigned (normalised) vectors.
- `standard`: plain residual VQ. A stage quantises r itself and hands on r - c; codebooks are the classic
  VQ-VAE EMA (running sums over running counts, Laplace-smoothed).

Buffers keep the released layout (five per stage) so official checkpoints convert one-to-one.

Nearest-codeword search (`EMACodebook.nearest`) gives exactly the codes of the released formulation
(`reference_nearest`: argmin of |z|^2 + |w|^2 - 2 z.w in fp32), faster:

- `"exact"` (default): the same arithmetic, element for element, in blocks of rows whose [rows, K] distance block
  stays in cache (one matrix product, one subtract from |z|^2 + |w|^2, one row-min per block; no [N, K, D]
  tensor, no cdist, no float64), with the codeword norms cached per codebook version; normalised vectors share
  a few values of |z|^2, so |z|^2 + |w|^2 is one row per value instead of a [rows, K] block. Blocks have at least
  `SEARCH_BLOCK_ROWS` rows (or all of them), and a row's dot products do not depend on the other rows of its
  product (checked: MKL's sgemm accumulates every dot product in order, for 6 or more rows), so the distances,
  hence the codes (first index on ties), are bitwise those of the reference.
- `"bf16-rescore"` (opt-in): candidate scores from a bf16 matrix product; every code within the bf16 error bound
  of a row's best score is a candidate, and rows with several are rescored exactly (fp32 dot products accumulated
  in the order of the fp32 matrix product, then the reference formula); a row with more than `SEARCH_CANDIDATES`
  candidates is searched exactly. Identical codes by construction as long as the rescoring's dot products are
  bitwise those of the fp32 product (true of MKL's sgemm on the CPUs measured; tests check it); only useful where
  bf16 matrix products are fast (AMX) and codebooks are large (below `BF16_MIN_WORK` codes x dim, e.g. the mdct
  bands, it searches exactly).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

SEARCH_PRECISIONS = ("exact", "bf16-rescore")
SEARCH_BLOCK_ROWS = 256  # rows per block of the search: a [256, 8192] fp32 block is 8 MiB
BF16_SEARCH_BLOCK_ROWS = 512  # bf16-rescore: a [512, 8192] bf16 block (8 MiB): fewer rounds of its small steps
SEARCH_CANDIDATES = 8  # bf16-rescore: a row with more candidates than this is searched exactly
BF16_MIN_WORK = 2048 * 64  # bf16-rescore only pays off on large codebooks (codes x dim); smaller: exact search
SHARED_NORM_GROUPS = 32  # at most this many distinct |z|^2: one shared |z|^2 + |w|^2 row per value


def check_search_precision(precision: str) -> str:
    if precision not in SEARCH_PRECISIONS:
        raise ValueError(f"search_precision must be one of {SEARCH_PRECISIONS}, got {precision!r}")
    return precision


def reference_nearest(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The released nearest-codeword search, written out: argmin over the [N, K] matrix of
    |z|^2 + |w|^2 - 2 z.w. `EMACodebook.nearest` returns exactly these codes (kept for tests and benchmarks)."""
    distances = vectors.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * vectors @ codebook.t()
    return distances.argmin(dim=1)


def _row_blocks(num_rows: int, block_rows: int) -> list[tuple[int, int]]:
    """[start, stop) row blocks of at least `block_rows` rows (the last one takes the remainder), or one block."""
    if num_rows < 2 * block_rows:
        return [(0, num_rows)]
    starts = list(range(0, num_rows - block_rows + 1, block_rows))
    return [(start, stop) for start, stop in zip(starts, starts[1:] + [num_rows])]


def _no_cache() -> None:
    return None


class _SearchCache:
    """What the search needs from one version of a codebook: its squared norms (the reference's
    `codebook.pow(2).sum(dim=1)`, so bitwise the same), their spread, the largest norm, and (bf16-rescore, made
    when first needed) a bf16 copy and a transposed copy."""

    def __init__(self, codebook: torch.Tensor, version: int):
        self.codebook = weakref.ref(codebook)
        self.version = version
        self.norms = codebook.pow(2).sum(dim=1)
        self._bf16 = self._transposed = self._norm_range = None

    def matches(self, codebook: torch.Tensor, version: int) -> bool:
        return self.codebook() is codebook and self.version == version

    def __reduce__(self):  # a copied or pickled module starts without a cache (a weak reference cannot be copied)
        return _no_cache, ()

    def bf16(self, codebook: torch.Tensor) -> torch.Tensor:
        if self._bf16 is None:
            self._bf16 = codebook.to(torch.bfloat16)
        return self._bf16

    def transposed(self, codebook: torch.Tensor) -> torch.Tensor:
        if self._transposed is None:
            self._transposed = codebook.t().contiguous()
        return self._transposed

    def norm_range(self) -> tuple[float, float]:
        """(max |w|^2 - min |w|^2, max |w|)."""
        if self._norm_range is None:
            self._norm_range = (float(self.norms.max() - self.norms.min()), float(self.norms.max().sqrt()))
        return self._norm_range


def _exact_search(vectors: torch.Tensor, codebook: torch.Tensor, norms: torch.Tensor,
                  block_rows: int | None = None) -> torch.Tensor:
    """`reference_nearest(vectors, codebook)` block by block: the same fp32 operations on the same values.

    Normalised vectors have only a few distinct squared norms |z|^2 (1 give or take a few ulps): rows are then
    sorted by it and each run of equal |z|^2 subtracts 2 z.w from one shared row |z|^2 + |w|^2 (the reference's
    values exactly) instead of a [rows, K] matrix of them.
    """
    num_rows, size = vectors.shape[0], codebook.shape[0]
    indices = torch.empty(num_rows, dtype=torch.long, device=vectors.device)
    if num_rows == 0:
        return indices
    squared = vectors.pow(2).sum(dim=1, keepdim=True)  # as the reference (all rows at once)
    blocks = _row_blocks(num_rows, (block_rows or SEARCH_BLOCK_ROWS) if vectors.device.type == "cpu" else num_rows)
    largest = max(stop - start for start, stop in blocks)
    scores = vectors.new_empty(largest, size)
    values = vectors.new_empty(largest)
    codebook_t = codebook.t()
    shared = vectors.device.type == "cpu" and num_rows >= 64
    if shared:  # few distinct |z|^2 (normalised vectors): one shared |z|^2 + |w|^2 row per value
        distinct, inverse, counts = torch.unique(squared.view(-1), return_inverse=True, return_counts=True)
        shared = distinct.numel() <= SHARED_NORM_GROUPS
    if shared:
        order = torch.argsort(inverse, stable=True)
        bases = distinct.unsqueeze(1) + norms  # [G, K]: |z|^2 + |w|^2 for each distinct |z|^2
        ends = counts.cumsum(0).tolist()
        runs = list(zip([0] + ends[:-1], ends))
        ordered, sorted_indices = vectors[order], torch.empty_like(indices)
        for start, stop in blocks:
            block = torch.mm(ordered[start:stop], codebook_t, out=scores[:stop - start])
            for group, (low, high) in enumerate(runs):
                low, high = max(low, start), min(high, stop)
                if low < high:
                    run = block[low - start:high - start]
                    torch.sub(bases[group], run, alpha=2, out=run)
            torch.min(block, dim=1, out=(values[:stop - start], sorted_indices[start:stop]))
        indices[order] = sorted_indices
        return indices
    base = vectors.new_empty(largest, size)
    for start, stop in blocks:
        rows = stop - start
        block = torch.mm(vectors[start:stop], codebook_t, out=scores[:rows])  # z.w (2 z.w is exactly twice it)
        torch.sub(torch.add(squared[start:stop], norms, out=base[:rows]), block, alpha=2, out=block)
        torch.min(block, dim=1, out=(values[:rows], indices[start:stop]))  # first index on ties, as argmin
    return indices


def _exact_pair_dots(vectors: torch.Tensor, codebook: torch.Tensor, rows: torch.Tensor,
                     codes: torch.Tensor) -> torch.Tensor:
    """fp32 dot products of the pairs (vectors[rows[i]], codebook[codes[i]]) -> [P], accumulated one coordinate at a
    time with fused multiply-adds, which is the order of the fp32 matrix product (so bitwise its values)."""
    left, right = vectors[rows].t().contiguous(), codebook[codes].t().contiguous()  # [D, P] each
    dots = torch.zeros(rows.shape, dtype=vectors.dtype, device=vectors.device)
    for d in range(left.shape[0]):
        dots.addcmul_(left[d], right[d])
    return dots


def _bf16_rescore_search(vectors: torch.Tensor, codebook: torch.Tensor, cache: _SearchCache,
                         num_candidates: int | None = None, block_rows: int | None = None,
                         normalized: bool = False):
    """bf16 candidate search + exact rescoring; returns (indices [N], number of rows searched exactly).

    Codes are split into `stripes` interleaved groups (code r * L + l is member r of group l). Per row, the bf16
    scores give each group's best score (one strided max) and the row's best score; the margin bounds twice the
    bf16 error (inputs, output, accumulation) plus the rounding of the fp32 formula, so every code that can be
    nearest scores within it of the best: those are the candidates, found through the groups that reach the
    margin. A row with one candidate gets it; the others are rescored exactly (fp32, the reference formula,
    first code on ties); a row with more than `num_candidates` candidates (e.g. a zero vector, equidistant
    from all) is searched exactly.
    """
    num_rows, dim = vectors.shape
    size = codebook.shape[0]
    num_candidates = num_candidates or SEARCH_CANDIDATES
    bf16_rows = block_rows or BF16_SEARCH_BLOCK_ROWS  # (a given block_rows sets the exact search's blocks too)
    stripes = 16 if size % 16 == 0 and size // 16 >= 2 * num_candidates else 1
    groups = size // stripes
    if num_rows == 0 or not bool(torch.isfinite(vectors).all()):
        return _exact_search(vectors, codebook, cache.norms, block_rows), num_rows
    norms = cache.norms
    spread, max_norm = cache.norm_range()
    # rank by s_k = z.w_k - |w_k|^2 / 2 (larger = nearer); with (near) unit codewords the norm term is a constant
    rank_by_dot = normalized or spread <= 1e-3 * float(norms.mean())
    vector_norms = vectors.norm(dim=1)
    unit = 2.0 ** -24
    size_bound = vector_norms * max_norm  # >= |z.w| for every code
    # bf16 inputs (2^-9 each), bf16 output (2^-9, counted as 2^-8), fp32 accumulations (bf16 and exact products)
    error = (2.0 ** -8 + 2.0 ** -16 + 2.0 ** -8 + 6 * dim * unit) * size_bound
    error = error + (0.5 * spread if rank_by_dot else 4 * unit * (size_bound + max_norm ** 2))
    rounding = 4 * unit * (vector_norms.pow(2) + max_norm ** 2 + 2 * size_bound)
    margin = 2 * error + 2 * rounding
    indices = torch.empty(num_rows, dtype=torch.long, device=vectors.device)
    pair_rows, pair_codes, crowded = [], [], []  # crowded: rows with too many candidates
    low_precision = vectors.to(torch.bfloat16)
    codebook_bf16_t = cache.bf16(codebook).t()
    blocks = _row_blocks(num_rows, bf16_rows if vectors.device.type == "cpu" else num_rows)
    scores = low_precision.new_empty(max(stop - start for start, stop in blocks), size)
    for start, stop in blocks:
        height = stop - start
        block = torch.mm(low_precision[start:stop], codebook_bf16_t, out=scores[:height])
        if not rank_by_dot:
            block = block.float().sub_(norms, alpha=0.5)
        grid = block.view(height, stripes, groups)
        group_best = grid.amax(dim=1)  # [rows, groups]
        best, best_group = group_best.max(dim=1)
        threshold = best.float() - margin[start:stop]  # a code scoring below it cannot be nearest
        reaching = group_best >= threshold[:, None]  # [rows, groups]
        members = grid.gather(2, best_group.view(height, 1, 1).expand(height, stripes, 1)).squeeze(2)  # [rows, stripes]
        reached = reaching.sum(dim=1)  # each reaching group holds at least one candidate
        single = (reached == 1) & ((members >= threshold[:, None]).sum(dim=1) == 1)
        indices[start:stop] = members.argmax(dim=1) * groups + best_group  # right where `single`
        crowded.append((reached > num_candidates).nonzero().squeeze(1) + start)
        # the other rows: every (row, group) that reaches the margin, then its members that do
        row, group = (reaching & (~single & (reached <= num_candidates))[:, None]).nonzero(as_tuple=True)
        member_scores = grid[row, :, group]  # [P, stripes]
        pair, member = (member_scores >= threshold[row, None]).nonzero(as_tuple=True)
        pair_rows.append(row[pair] + start)
        pair_codes.append(member * groups + group[pair])
    rows, codes = torch.cat(pair_rows), torch.cat(pair_codes)
    counts = torch.bincount(rows, minlength=num_rows)
    crowded = torch.cat(crowded + [(counts > num_candidates).nonzero().squeeze(1)])  # searched exactly below
    if crowded.numel():
        keep = counts[rows] <= num_candidates
        rows, codes = rows[keep], codes[keep]
    if rows.numel():
        dots = _exact_pair_dots(vectors, codebook, rows, codes)
        squared = vectors[rows].pow(2).sum(dim=1)  # as the reference: |z|^2 + |w|^2 - 2 z.w
        distances = torch.sub(squared + norms[codes], dots, alpha=2)
        nearest = torch.full((num_rows,), float("inf"), dtype=distances.dtype, device=vectors.device)
        nearest.scatter_reduce_(0, rows, distances, "amin")
        first = torch.full((num_rows,), size, dtype=torch.long, device=vectors.device)
        first.scatter_reduce_(0, rows, torch.where(distances == nearest[rows], codes, size), "amin")  # first on ties
        rescored = counts > 0
        rescored[crowded] = False
        indices[rescored] = first[rescored]
    if crowded.numel():
        subset = vectors[crowded]
        if subset.shape[0] < 8:  # keep the matrix product on its usual path (its dot products, bitwise)
            subset = torch.cat((subset, subset.new_zeros(8 - subset.shape[0], dim)))
        indices[crowded] = _exact_search(subset, codebook, norms, block_rows)[: crowded.numel()]
    return indices, int(crowded.numel())


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int, use_cosine: bool, generator=None):
    """Lloyd's k-means on `samples` [N, D]. Returns `(means [num_clusters, D], counts [num_clusters])`.

    Cosine k-means (official) assigns by dot product with unit means and re-normalises the means.
    Empty clusters keep their previous mean. With fewer samples than clusters, means are drawn with
    replacement.
    """
    num_samples, dim = samples.shape
    if num_samples >= num_clusters:
        indices = torch.randperm(num_samples, device=samples.device, generator=generator)[:num_clusters]
    else:
        indices = torch.randint(0, num_samples, (num_clusters,), device=samples.device, generator=generator)
    means = samples[indices]
    counts = torch.zeros(num_clusters, device=samples.device, dtype=samples.dtype)
    for _ in range(num_iters):
        if use_cosine:
            assignment = (samples @ means.t()).argmax(dim=-1)
        else:
            assignment = torch.cdist(samples, means).argmin(dim=-1)
        counts = torch.bincount(assignment, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(means).index_add_(0, assignment, samples)
        new_means = sums / counts.clamp(min=1).unsqueeze(-1)
        if use_cosine:
            new_means = F.normalize(new_means, dim=-1)
        means = torch.where((counts == 0).unsqueeze(-1), means, new_means)
    return means, counts


def code_statistics(indices: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of the codebook used and perplexity (exp of the entropy, nats) of the codes `indices` (any shape)."""
    histogram = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    probabilities = histogram / histogram.sum().clamp(min=1)
    return (histogram > 0).float().mean(), torch.exp(-(probabilities * probabilities.clamp(min=1e-10).log()).sum())


class EMACodebook(nn.Module):
    """One quantizer stage: a codebook [codebook_size, code_dim] updated by EMA, never by gradients.

    Buffers (released names in brackets): `codebook` [embedding.weight], `ema_sum` [embedding.embed_avg],
    `ema_count` [embedding.cluster_size], `usage` [cluster_size] (EMA of per-code assignment counts, for
    statistics and dead-code restart), `initialized` [embedding.initted].
    """

    def __init__(self, codebook_size: int, code_dim: int, normalize: bool, decay: float, kmeans_iters: int,
                 dead_code_threshold: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.codebook_size = codebook_size
        self.normalize = normalize
        self.decay = decay
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.eps = eps
        self.restarted = 0  # codes restarted by the last update (for logging)
        self.register_buffer("codebook", torch.zeros(codebook_size, code_dim))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, code_dim))
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("usage", torch.zeros(codebook_size))
        self.register_buffer("initialized", torch.zeros(1))
        self._search_cache: _SearchCache | None = None
        self.fallback_rows = 0  # bf16-rescore: rows of the last search that were searched exactly

    def _search_state(self) -> _SearchCache:
        """Codeword norms (and bf16 copy) of the current codebook, recomputed whenever it changes: the cache is
        keyed on the codebook tensor itself and its version counter (every in-place write bumps it)."""
        codebook = self.codebook
        try:
            version = codebook._version
        except RuntimeError:  # inference-mode tensors keep no version counter: no caching
            return _SearchCache(codebook, -1)
        cache = self._search_cache
        if cache is None or not cache.matches(codebook, version):
            with torch.no_grad():
                cache = self._search_cache = _SearchCache(codebook, version)
        return cache

    def clear_search_cache(self) -> None:
        """Drop the cached codeword norms (only needed after writing the codebook through `.data`)."""
        self._search_cache = None

    def nearest(self, vectors: torch.Tensor, precision: str = "exact") -> torch.Tensor:
        """Index of the nearest codeword (Euclidean) for every row of `vectors` [N, D] -> [N]: exactly the codes
        of `reference_nearest` (the released |z|^2 + |w|^2 - 2 z.w, first index on ties), see the module notes."""
        check_search_precision(precision)
        with torch.no_grad():
            cache = self._search_state()
            if precision == "bf16-rescore" and self.codebook.numel() >= BF16_MIN_WORK:
                indices, self.fallback_rows = _bf16_rescore_search(vectors.detach(), self.codebook, cache,
                                                                   normalized=self.normalize)
                return indices
            self.fallback_rows = vectors.shape[0] if precision == "bf16-rescore" else 0
            return _exact_search(vectors.detach(), self.codebook, cache.norms)

    @torch.no_grad()
    def initialize(self, vectors: torch.Tensor) -> None:
        """k-means initialisation on the first training batch; rank 0's result is broadcast to all ranks."""
        means, counts = kmeans(vectors.float(), self.codebook_size, self.kmeans_iters, use_cosine=self.normalize)
        if _distributed():
            dist.broadcast(means, src=0)
            dist.broadcast(counts, src=0)
        self.codebook.copy_(means)
        self.ema_count.copy_(counts)
        self.usage.copy_(counts)
        if not self.normalize:
            self.ema_sum.copy_(means * counts.unsqueeze(-1))
        self.initialized.fill_(1.0)

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA update from the assigned `vectors` [N, D] and their `indices` [N], summed over processes."""
        vectors = vectors.float()
        counts = torch.bincount(indices, minlength=self.codebook_size).to(vectors.dtype)
        sums = torch.zeros_like(self.codebook).index_add_(0, indices, vectors)
        _all_reduce_sum(counts)
        _all_reduce_sum(sums)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.normalize:
            means = F.normalize(sums / counts.clamp(min=1).unsqueeze(-1), dim=-1)
            means = torch.where((counts == 0).unsqueeze(-1), self.codebook, means)
            self.codebook.mul_(self.decay).add_(means, alpha=1 - self.decay)
            self.codebook.copy_(F.normalize(self.codebook, dim=-1))
        else:
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (total + self.codebook_size * self.eps) * total
            self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(-1))
        if self.dead_code_threshold > 0:
            self.restart_dead_codes(vectors)

    @torch.no_grad()
    def restart_dead_codes(self, vectors: torch.Tensor) -> None:
        """Replace codes whose EMA usage fell below the threshold by random vectors of this batch [N, D].

        `usage` is identical on every process (its counts are all-reduced), so every rank finds the same dead
        codes; rank 0 draws the replacements and broadcasts them.
        """
        dead = (self.usage < self.dead_code_threshold).nonzero().flatten()
        self.restarted = int(dead.numel())
        if not self.restarted:
            return
        if vectors.shape[0]:
            replacements = vectors[torch.randint(0, vectors.shape[0], (self.restarted,), device=vectors.device)].clone()
        else:  # this rank saw only padding; rank 0's broadcast decides anyway
            replacements = torch.randn(self.restarted, self.codebook.shape[1], device=vectors.device)
        if _distributed():
            dist.broadcast(replacements, src=0)
        self.codebook[dead] = F.normalize(replacements, dim=-1) if self.normalize else replacements
        self.usage[dead] = self.usage.mean()
        self.ema_count[dead] = 1.0
        self.ema_sum[dead] = self.codebook[dead]


@dataclass
class QuantizerOutput:
    """Result of a residual quantizer on N vectors.

    quantized: [N, D] sum of the stages' codewords (straight-through in training).
    codes: [K, N] code index per stage.
    loss: scalar, mean over stages of the per-stage loss.
    usage: [K] fraction of the codebook used in this batch, per stage.
    perplexity: [K] exp(entropy) of the batch's code histogram, per stage.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    usage: torch.Tensor
    perplexity: torch.Tensor


class ResidualVectorQuantizer(nn.Module):
    """K residual stages of `EMACodebook` (one quantizer per scale in NeuroRVQ)."""

    def __init__(self, num_quantizers: int, codebook_size: int, code_dim: int, quantizer_type: str = "official",
                 decay: float = 0.99, kmeans_iters: int = 10, commitment_weight: float = 1.0,
                 codebook_weight: float = 0.4, dead_code_threshold: float = 0.0):
        super().__init__()
        self.normalize = quantizer_type == "official"
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.stages = nn.ModuleList(
            EMACodebook(codebook_size, code_dim, self.normalize, decay, kmeans_iters, dead_code_threshold)
            for _ in range(num_quantizers)
        )
        self.search_precision = "exact"  # see the module notes; "bf16-rescore" is opt-in

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor | None = None, num_quantizers: int | None = None,
                search_precision: str | None = None) -> QuantizerOutput:
        """Quantise `vectors` [N, D] with the first `num_quantizers` stages.

        `mask` [N] (True = real) selects the vectors that initialise and update codebooks and enter the
        loss and statistics; all vectors are encoded. In training, codebooks are initialised by k-means
        on the first batch and updated by EMA after each assignment. `search_precision` overrides
        `self.search_precision` for this call.
        """
        precision = check_search_precision(search_precision or self.search_precision)
        with torch.autocast(device_type=vectors.device.type, enabled=False):  # quantizer stays fp32
            return self._forward(vectors.float(), mask, num_quantizers, precision)

    def _forward(self, vectors: torch.Tensor, mask: torch.Tensor | None, num_quantizers: int | None,
                 precision: str = "exact") -> QuantizerOutput:
        stages = self.stages[: num_quantizers or len(self.stages)]
        residual = vectors
        quantized = torch.zeros_like(vectors)
        codes, losses, usage, perplexity = [], [], [], []
        for stage in stages:
            target = F.normalize(residual, dim=-1) if self.normalize else residual
            if self.training and not bool(stage.initialized.item()):
                stage.initialize((target if mask is None else target[mask]).detach())
            indices = stage.nearest(target.detach(), precision)
            codewords = stage.codebook[indices]
            real_indices = indices if mask is None else indices[mask]
            real_target = target if mask is None else target[mask]
            real_codewords = codewords if mask is None else codewords[mask]
            if self.training:
                stage.update(real_target.detach(), real_indices)
            real_residual = residual if mask is None else residual[mask]
            # commitment pulls the encoder to its codeword; the codebook term is reported as released
            # (codewords carry no gradient: they move by EMA only)
            losses.append(
                self.commitment_weight * F.mse_loss(real_target, real_codewords)
                + self.codebook_weight * F.mse_loss(real_codewords, (real_residual - real_codewords).detach())
            )
            quantized = quantized + target + (codewords - target).detach()
            residual = residual - codewords
            codes.append(indices)
            stage_usage, stage_perplexity = code_statistics(real_indices, stage.codebook_size)
            usage.append(stage_usage)
            perplexity.append(stage_perplexity)
        return QuantizerOutput(
            quantized=quantized,
            codes=torch.stack(codes),
            loss=torch.stack(losses).mean(),
            usage=torch.stack(usage),
            perplexity=torch.stack(perplexity),
        )

    @torch.no_grad()
    def encode(self, vectors: torch.Tensor, num_quantizers: int | None = None,
               search_precision: str | None = None) -> torch.LongTensor:
        """Greedy residual encoding with frozen codebooks (no EMA update, no initialisation):
        `vectors` [N, D] -> codes [K', N]. The same codes as `forward` in eval mode."""
        precision = check_search_precision(search_precision or self.search_precision)
        residual, codes = vectors.float(), []
        for stage in self.stages[: num_quantizers or len(self.stages)]:
            target = F.normalize(residual, dim=-1) if self.normalize else residual
            indices = stage.nearest(target, precision)
            residual = residual - stage.codebook[indices]
            codes.append(indices)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the stages' codewords: `codes` [K', ...] (K' <= K) -> [..., D]."""
        if codes.shape[0] > len(self.stages):
            raise ValueError(f"codes have {codes.shape[0]} stages, the quantizer has {len(self.stages)}")
        return sum(stage.codebook[stage_codes] for stage, stage_codes in zip(self.stages, codes))
