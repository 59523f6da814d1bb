"""Vector quantization on the unit sphere, with an EMA codebook (LaBraM's VQ-NSP).

Features and codes are l2-normalised, so the nearest code is the one at the smallest
angle (largest cosine). The codebook is not trained by gradients:

- **initialisation**: cosine k-means on the first training batch;
- **EMA**: each code keeps an exponential moving average (``decay``) of the number of
  features assigned to it and of their sum; the code is the sum's direction;
- **revival**: a code no feature chose for ``dead_after`` updates is replaced by a
  feature of the current batch;
- **straight-through**: the quantized vector passes the gradient to the feature as if
  quantization were the identity; a commitment loss ``beta * mean((z - code)^2)`` keeps
  the features near their codes.

Under ``torch.distributed`` the counts and sums are summed over ranks before the EMA
step, and the k-means result and revived codes are rank 0's, broadcast, so every rank
holds the same codebook. Every random draw uses torch's generator of the features'
device, so training resumes bit for bit on the CPU from the same RNG state.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NeurofmError, check_finite

__all__ = [
    "CodebookStats",
    "QuantizerOutput",
    "VectorQuantizer",
    "kmeans_cosine",
    "perplexity",
]

#: sampling weight of rows that are not ``valid``: never drawn while any valid row exists
_TINY = 1e-30


@dataclass
class QuantizerOutput:
    """What :meth:`VectorQuantizer.forward` returns, row for row of its input.

    quantized  : (M, dim)  the codes, with straight-through gradient to the features
    codes      : (M,) long the chosen code per row (-1 where not ``valid``)
    commitment : (M,)      ``beta * mean((z - code)^2)`` per row (0 where not ``valid``)
    """

    quantized: Tensor
    codes: Tensor
    commitment: Tensor


@dataclass
class CodebookStats:
    """Codebook health, as 0-dim tensors (no device sync until read; :meth:`as_dict`).

    usage      : fraction of codes chosen in the last ``window`` updates
    perplexity : exp(entropy) of the last training batch's assignments (1: one code,
                 ``n_codes``: all used equally)
    dead       : codes found unused for ``dead_after`` updates (then revived) at the
                 last update
    used       : fraction of codes chosen in the last training batch
    """

    usage: Tensor
    perplexity: Tensor
    dead: Tensor
    used: Tensor

    def as_dict(self) -> dict[str, float]:
        """Plain floats for logging (reads the values: one device sync)."""
        return {k: float(v) for k, v in asdict(self).items()}


def _dist():
    """``torch.distributed`` when a process group is running, else None."""
    dist = torch.distributed
    return dist if dist.is_available() and dist.is_initialized() else None


def _full_precision(device: torch.device):
    """Autocast off on ``device`` (cosines in float32: bf16 would tie nearby codes)."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know (meta)
        return contextlib.nullcontext()


def _nearest(z: Tensor, codebook: Tensor) -> Tensor:
    """Index of the largest cosine per row (unit vectors), in row blocks whose cosine
    matrix stays near 2**25 values (128 MB in float32)."""
    rows = max(1, 2**25 // codebook.shape[0])
    return torch.cat([(part @ codebook.T).argmax(-1) for part in z.split(rows)])


def _weighted(z: Tensor, weight: Tensor) -> Tensor:
    """Rows times their weight; weight-0 rows are zeros even where ``z`` is not finite."""
    return torch.where(weight[:, None] > 0, z * weight[:, None], 0.0)


def _sample(weight: Tensor, n: int) -> Tensor:
    """``n`` row indices drawn in proportion to ``weight`` (distinct while possible)."""
    return torch.multinomial(weight, n, replacement=n > weight.shape[0])


@torch.no_grad()
def kmeans_cosine(z: Tensor, k: int, iters: int = 10, weight: Tensor | None = None):
    """Spherical k-means of unit rows ``z`` (M, dim): ``k`` unit centroids and their counts.

    Centroids start at ``k`` rows drawn at random (``weight``: per-row sampling weight, 0
    rows are never drawn while others exist and never count); each iteration assigns
    every row to its nearest centroid by cosine and moves each centroid to the direction
    of its rows' sum. A centroid with no rows keeps its place.

    Returns
    -------
    centroids : (k, dim) tensor
    counts : (k,) tensor
        Weighted number of rows assigned to each centroid at the last assignment.
    """
    weight = torch.ones(z.shape[0], device=z.device) if weight is None else weight.float()
    centroids = z[_sample(weight + _TINY, k)]
    counts = torch.zeros(k, device=z.device)
    for _ in range(max(iters, 1)):
        assign = _nearest(z, centroids)
        counts = torch.zeros(k, device=z.device).index_add_(0, assign, weight)
        sums = torch.zeros_like(centroids).index_add_(0, assign, _weighted(z, weight))
        if iters == 0:
            break
        centroids = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), centroids)
    return centroids, counts


class VectorQuantizer(nn.Module):
    """Nearest-code quantization of unit vectors with an EMA codebook.

    Parameters
    ----------
    n_codes, dim : int
        Codebook size and code width (LaBraM: 8192 x 64).
    decay : float
        EMA decay of the codes' counts and sums (LaBraM: 0.99).
    beta : float
        Weight of the commitment loss (LaBraM: 1.0).
    eps : float
        Smallest sum length that still gives a code its direction.
    kmeans_iters : int
        Iterations of the cosine k-means that initialises the codebook on the first
        training batch (0: codes are random batch features).
    dead_after : int
        Updates without any feature before a code is revived.

    Buffers (saved with the model): ``codebook`` (unit rows), ``cluster_size`` and
    ``embed_sum`` (the EMA), ``initialised``, ``step`` (updates done), ``last_used`` (the
    update at which each code was last chosen, -1: never) and ``born`` (the update at
    which it was initialised or revived).
    """

    def __init__(self, n_codes: int, dim: int, *, decay: float = 0.99, beta: float = 1.0,
                 eps: float = 1e-5, kmeans_iters: int = 10, dead_after: int = 100):  # fmt: skip
        super().__init__()
        for name, value, low in (("n_codes", n_codes, 2), ("dim", dim, 1),
                                 ("kmeans_iters", kmeans_iters, 0), ("dead_after", dead_after, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise NeurofmError(f"VectorQuantizer {name} must be an int >= {low}, got {value!r}")
        self.decay = check_finite(decay, "VectorQuantizer decay", low=0.0, high=1.0)
        if self.decay >= 1.0:
            raise NeurofmError("VectorQuantizer decay=1.0 never moves the codes: use e.g. 0.99")
        self.beta = check_finite(beta, "VectorQuantizer beta", low=0.0)
        self.eps = check_finite(eps, "VectorQuantizer eps", low=0.0, low_open=True)
        self.n_codes, self.dim = n_codes, dim
        self.kmeans_iters, self.dead_after = kmeans_iters, dead_after
        self.register_buffer("codebook", F.normalize(torch.randn(n_codes, dim), dim=-1))
        self.register_buffer("cluster_size", torch.zeros(n_codes))
        self.register_buffer("embed_sum", torch.zeros(n_codes, dim))
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("step", torch.tensor(0, dtype=torch.long))
        self.register_buffer("last_used", torch.full((n_codes,), -1, dtype=torch.long))
        self.register_buffer("born", torch.zeros(n_codes, dtype=torch.long))
        # the last training batch, for stats(); not saved (a resumed run refills them)
        self.register_buffer("batch_counts", torch.zeros(n_codes), persistent=False)
        self.register_buffer("last_dead", torch.tensor(0, dtype=torch.long), persistent=False)
        self._known_initialised = False  # ``initialised`` read True once (no more reads)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._known_initialised = False  # the loaded flag is read at the next training step
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"n_codes={self.n_codes}, dim={self.dim}, decay={self.decay}, beta={self.beta}, "
                f"dead_after={self.dead_after}")  # fmt: skip

    # ------------------------------------------------------------------ forward
    def forward(self, z: Tensor, valid: Tensor | None = None) -> QuantizerOutput:
        """Quantize rows ``z`` (M, dim); l2-normalised here.

        Parameters
        ----------
        z : (M, dim) tensor
            Features, one per real token (or per row of a grid with ``valid``).
        valid : (M,) bool tensor, optional
            Rows that count. Others (padding) get code -1 and zero commitment, and never
            reach the codebook (no k-means, EMA, usage or revival). Passing the whole grid
            with ``valid`` instead of ``z[mask]`` avoids a device sync on accelerators.

        In training mode the codebook is updated after the assignment (k-means on the
        first call, EMA, revival); in eval mode nothing changes.
        """
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise NeurofmError(
                f"VectorQuantizer takes (M, {self.dim}) features; got {tuple(z.shape)}: "
                "flatten the token grid first (einops.rearrange(z, 'b s n d -> (b s n) d'))"
            )
        if valid is not None and (valid.dtype != torch.bool or valid.shape != z.shape[:1]):
            raise NeurofmError(
                f"valid must be a bool tensor of shape ({z.shape[0]},); got {valid.dtype} "
                f"{tuple(valid.shape)}"
            )
        with _full_precision(z.device):
            return self._forward(z, valid)

    def _forward(self, z: Tensor, valid: Tensor | None) -> QuantizerOutput:
        z = F.normalize(z.float(), dim=-1)
        if self.training and not self._known_initialised:
            with torch.no_grad():
                if not bool(self.initialised):  # read once: a device sync on accelerators
                    self._initialise(z.detach(), valid)
            self._known_initialised = True
        with torch.no_grad():
            codes = _nearest(z.detach(), self.codebook)
        quantized = self.codebook[codes]
        commitment = self.beta * (z - quantized).pow(2).mean(-1)
        quantized = z + (quantized - z).detach()  # straight-through
        if valid is not None:
            codes = torch.where(valid, codes, -1)
            commitment = torch.where(valid, commitment, 0.0)
        if self.training:
            with torch.no_grad():
                self._update(z.detach(), codes, valid)
        return QuantizerOutput(quantized=quantized, codes=codes, commitment=commitment)

    @torch.no_grad()
    def quantize(self, z: Tensor) -> Tensor:
        """Nearest code ids of rows ``z`` (M, dim): no update, no gradient."""
        with _full_precision(z.device):
            return _nearest(F.normalize(z.float(), dim=-1), self.codebook)

    # ------------------------------------------------------------------ updates
    def _initialise(self, z: Tensor, valid: Tensor | None) -> None:
        """Cosine k-means on this batch (rank 0's, broadcast); the EMA starts from it."""
        weight = None if valid is None else valid.float()
        codebook, counts = self.codebook.clone(), torch.zeros_like(self.cluster_size)
        if z.shape[0]:  # k-means, unless no row is valid (then: the random codes stay)
            means, n = kmeans_cosine(z, self.n_codes, self.kmeans_iters, weight)
            some = n.sum() > 0
            codebook, counts = torch.where(some, means, codebook), torch.where(some, n, counts)
        dist = _dist()
        if dist is not None:  # rank 0's k-means; its counts stand for every rank's batch
            dist.broadcast(codebook, src=0)
            dist.broadcast(counts, src=0)
            counts = counts * dist.get_world_size()
        self.codebook.copy_(codebook)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(codebook * counts.clamp(min=1.0)[:, None])
        self.born.zero_()
        self.last_used.fill_(-1)
        self.initialised.fill_(True)

    def _update(self, z: Tensor, codes: Tensor, valid: Tensor | None) -> None:
        """One EMA step over the features assigned to each code, then revival."""
        weight = torch.ones(z.shape[0], device=z.device) if valid is None else valid.float()
        index = codes.clamp(min=0)  # -1 (not valid) rows carry weight 0
        counts = torch.zeros_like(self.cluster_size).index_add_(0, index, weight)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, index, _weighted(z, weight))
        dist = _dist()
        if dist is not None:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.step += 1
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # each code: the direction of its EMA sum (kept while the sum is too short to say)
        length = self.embed_sum.norm(dim=-1, keepdim=True)
        direction = self.embed_sum / length.clamp(min=self.eps)
        self.codebook.copy_(torch.where(length > self.eps, direction, self.codebook))
        self.last_used.copy_(torch.where(counts > 0, self.step, self.last_used))
        self.batch_counts.copy_(counts)
        self._revive(z, weight)

    def _revive(self, z: Tensor, weight: Tensor) -> None:
        """Codes unused for ``dead_after`` updates become features of this batch.

        Runs every update without reading values (no device sync): replacements are
        drawn for every code and kept where a code is dead.
        """
        idle = self.step - torch.maximum(self.last_used, self.born)
        dead = idle >= self.dead_after
        fresh = self.codebook.clone()
        if z.shape[0]:  # batch features, unless none is valid (then: no change)
            fresh = torch.where(weight.sum() > 0, z[_sample(weight + _TINY, self.n_codes)], fresh)
        dist = _dist()
        if dist is not None:
            dist.broadcast(fresh, src=0)
        self.codebook.copy_(torch.where(dead[:, None], fresh, self.codebook))
        self.embed_sum.copy_(torch.where(dead[:, None], fresh, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead, 1.0, self.cluster_size))
        self.born.copy_(torch.where(dead, self.step, self.born))
        self.last_dead.copy_(dead.sum())

    # ------------------------------------------------------------------ reporting
    @torch.no_grad()
    def stats(self, window: int | None = None) -> CodebookStats:
        """Usage over the last ``window`` updates (default ``dead_after``), perplexity and
        dead codes of the last training batch; see :class:`CodebookStats`."""
        window = self.dead_after if window is None else window
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise NeurofmError(f"stats window must be an int >= 1 (updates), got {window!r}")
        recent = (self.last_used >= 0) & (self.step - self.last_used < window)
        total = self.batch_counts.sum()
        p = self.batch_counts / total.clamp(min=1e-12)
        entropy = -(p * p.clamp(min=1e-12).log()).sum()
        return CodebookStats(
            usage=recent.float().mean(),
            perplexity=torch.where(total > 0, entropy.exp(), 0.0),
            dead=self.last_dead.clone(),
            used=(self.batch_counts > 0).float().mean(),
        )


def perplexity(codes: Tensor, n_codes: int) -> float:
    """exp(entropy) of code ids (``-1`` ignored): how many codes a batch effectively uses."""
    codes = codes[codes >= 0]
    if not codes.numel():
        return 0.0
    p = torch.bincount(codes, minlength=n_codes).float() / codes.numel()
    return math.exp(float(-(p * p.clamp(min=1e-12).log()).sum()))
