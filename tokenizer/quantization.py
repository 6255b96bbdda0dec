"""Residual vector quantization with EMA codebooks, k-means initialisation and process synchronisation.

Two kinds share one module:

- `official` (as released): every stage L2-normalises its incoming residual r, takes the nearest unit
  codeword c, outputs c (straight-through to the normalised r) and hands on r - c. Codebooks are updated
  by a normalised EMA of the mean of their assigned (normalised) vectors.
- `standard`: plain residual VQ. A stage quantises r itself and hands on r - c; codebooks are the classic
  VQ-VAE EMA (running sums over running counts, Laplace-smoothed).

Buffers keep the released layout (five per stage) so official checkpoints convert one-to-one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


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

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codeword (Euclidean) for every row of `vectors` [N, D] -> [N]."""
        # |z|^2 + |w|^2 - 2 z.w, the released formulation (keeps argmin ties identical to it)
        distances = (
            vectors.pow(2).sum(dim=1, keepdim=True)
            + self.codebook.pow(2).sum(dim=1)
            - 2 * vectors @ self.codebook.t()
        )
        return distances.argmin(dim=1)

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

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor | None = None, num_quantizers: int | None = None) -> QuantizerOutput:
        """Quantise `vectors` [N, D] with the first `num_quantizers` stages.

        `mask` [N] (True = real) selects the vectors that initialise and update codebooks and enter the
        loss and statistics; all vectors are encoded. In training, codebooks are initialised by k-means
        on the first batch and updated by EMA after each assignment.
        """
        with torch.autocast(device_type=vectors.device.type, enabled=False):  # quantizer stays fp32
            return self._forward(vectors.float(), mask, num_quantizers)

    def _forward(self, vectors: torch.Tensor, mask: torch.Tensor | None, num_quantizers: int | None) -> QuantizerOutput:
        stages = self.stages[: num_quantizers or len(self.stages)]
        residual = vectors
        quantized = torch.zeros_like(vectors)
        codes, losses, usage, perplexity = [], [], [], []
        for stage in stages:
            target = F.normalize(residual, dim=-1) if self.normalize else residual
            if self.training and not bool(stage.initialized.item()):
                stage.initialize((target if mask is None else target[mask]).detach())
            indices = stage.nearest(target.detach())
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
    def encode(self, vectors: torch.Tensor, num_quantizers: int | None = None) -> torch.LongTensor:
        """Greedy residual encoding with frozen codebooks (no EMA update, no initialisation):
        `vectors` [N, D] -> codes [K', N]. The same codes as `forward` in eval mode."""
        residual, codes = vectors.float(), []
        for stage in self.stages[: num_quantizers or len(self.stages)]:
            target = F.normalize(residual, dim=-1) if self.normalize else residual
            indices = stage.nearest(target)
            residual = residual - stage.codebook[indices]
            codes.append(indices)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the stages' codewords: `codes` [K', ...] (K' <= K) -> [..., D]."""
        if codes.shape[0] > len(self.stages):
            raise ValueError(f"codes have {codes.shape[0]} stages, the quantizer has {len(self.stages)}")
        return sum(stage.codebook[stage_codes] for stage, stage_codes in zip(self.stages, codes))
