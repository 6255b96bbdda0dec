"""The lapped transform of the `mdct` token design: one MDCT frame per one-second patch.

Frame a of a channel spans samples [a*P - P/2, a*P + 3P/2) (2P samples, hop P = patch_size) and gives P
coefficients; coefficient k sits at (k + 1/2) * sampling_rate / (2P) Hz. With a sine window (Princen-Bradley)
and orthonormal scaling, analysis followed by synthesis and overlap-add is the identity (TDAC), and the transform
is orthogonal: squared error on coefficients equals squared error in time. The first and last frame of a window
use a start / stop window (zero outside the signal, one up to its edge) so the window's own edges reconstruct
exactly too, without samples from outside it. Because every frame is faded in and out by the window, errors in
one patch's coefficients cross-fade into its neighbours: decoded patches have no seams at their edges.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


@lru_cache(maxsize=8)
def mdct_basis(patch_size: int) -> torch.Tensor:
    """Orthonormal MDCT cosines [2P, P] (no window): basis[n, k] = sqrt(2/P) cos(pi/P (n + 1/2 + P/2)(k + 1/2))."""
    n = torch.arange(2 * patch_size, dtype=torch.float64, device="cpu")[:, None]
    k = torch.arange(patch_size, dtype=torch.float64, device="cpu")[None, :]
    return (math.sqrt(2.0 / patch_size) * torch.cos(math.pi / patch_size * (n + 0.5 + patch_size / 2) * (k + 0.5))).float()


@lru_cache(maxsize=8)
def mdct_windows(patch_size: int) -> torch.Tensor:
    """Windows [4, 2P]: 0 = sine (interior), 1 = start, 2 = stop, 3 = start and stop (a one-patch window)."""
    half, quarter = patch_size, patch_size // 2
    sine = torch.sin(math.pi * (torch.arange(2 * half, dtype=torch.float64, device="cpu") + 0.5) / (2 * half))
    start, stop = sine.clone(), sine.clone()
    start[:quarter], start[quarter:half] = 0.0, 1.0
    stop[half:half + quarter], stop[half + quarter:] = 1.0, 0.0
    both = start.clone()
    both[half:] = stop[half:]
    return torch.stack((sine, start, stop, both)).float()


class LappedTransform(nn.Module):
    """MDCT analysis / synthesis of [*, T] signals with T = A * patch_size into [*, A, P] coefficients."""

    def __init__(self, patch_size: int):
        super().__init__()
        if patch_size % 2:
            raise ValueError(f"the MDCT needs an even patch_size, got {patch_size}")
        self.patch_size = patch_size

    # constants of patch_size, made on first use on the CPU (not buffers: nothing to store in checkpoints, and
    # nothing that a loader building the model on the meta device could leave empty)
    @property
    def basis(self) -> torch.Tensor:
        return mdct_basis(self.patch_size)

    @property
    def windows(self) -> torch.Tensor:
        return mdct_windows(self.patch_size)

    def _frame_windows(self, num_patches: int, start: bool = True, stop: bool = True) -> torch.Tensor:
        """[A, 2P]: the window of every frame (start / stop windows at the signal's edges: on the first / last
        frame when `start` / `stop`, else the sine window there too)."""
        kind = torch.zeros(num_patches, dtype=torch.long, device="cpu")
        kind[0] += int(start)
        kind[-1] += 2 * int(stop)
        return self.windows[kind]

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """signal [*, A * P] -> coefficients [*, A, P] (same units as the signal)."""
        p = self.patch_size
        num_patches = signal.shape[-1] // p
        padded = F.pad(signal.reshape(-1, 1, signal.shape[-1]), (p // 2, p // 2 + p)).squeeze(1)
        frames = padded.unfold(-1, 2 * p, p)[:, :num_patches]  # [*, A, 2P]
        frames = frames * self._frame_windows(num_patches).to(signal.device)
        return (frames @ self.basis.to(signal.device)).reshape(*signal.shape[:-1], num_patches, p)

    def inverse(self, coefficients: torch.Tensor, halo: tuple[bool, bool] = (False, False)) -> torch.Tensor:
        """coefficients [*, A, P] -> signal [*, A * P] (overlap-add of the windowed frames).

        `halo` = (before, after) synthesises a span of a longer signal (a chunk): the first / last given frame is
        then the span's outside neighbour, not the signal's edge. The span's samples are those of the whole
        signal's synthesis: patch a's samples come from frames a - 1, a and a + 1 only (the neighbours' halves
        next to the span, which are sine-windowed whatever the neighbour's own kind), and only the signal's real
        first / last frame gets a start / stop window. Returns [*, (A - before - after) * P]: the span without its
        neighbours' patches (those lack frames outside the given ones)."""
        p = self.patch_size
        lead, (num_patches, _) = coefficients.shape[:-2], coefficients.shape[-2:]
        before, after = int(halo[0]), int(halo[1])
        if num_patches - before - after < 1:
            raise ValueError(f"inverse needs at least one frame besides the halo, got {num_patches} frames, halo {halo}")
        windows = self._frame_windows(num_patches, start=not before, stop=not after).to(coefficients.device)
        frames = (coefficients.reshape(-1, num_patches, p) @ self.basis.to(coefficients.device).T) * windows
        length = (num_patches + 1) * p
        signal = F.fold(frames.transpose(1, 2), output_size=(1, length), kernel_size=(1, 2 * p), stride=(1, p))
        return signal.reshape(*lead, length)[..., p // 2 + before * p: p // 2 + (num_patches - after) * p]
