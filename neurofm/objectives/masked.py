"""Masked modelling objectives over the encoder's token grid.

- :class:`MaskedCodes` (LaBraM): hide tokens behind [MASK]; predict the frozen neural
  tokenizer's code id of each hidden token (cross-entropy); with ``symmetric`` the
  complementary tokens are hidden in a second pass of the same batch, so every real
  token is a target once.
- :class:`MaskedReconstruction` (CBraMod): hide tokens; regress their raw patch (MSE).
- :class:`MaskedAutoencoder` (BrainLM, MAE): drop tokens from the encoder's input; a
  light decoder fills them in from the visible tokens' features (MSE on the dropped ones).
- :class:`TokenizerTraining`: the neural tokenizer's own loss (spectrum prediction and
  codebook commitment), so the tokenizer trains in the same loop.

Which tokens are withheld (random, or the last patches: future masking) is
:class:`~neurofm.objectives.masking.MaskingConfig`; padding is never a target.
"""

from __future__ import annotations

from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..tokens import Tokens, collate
from .base import Loss, Objective, Plan
from .masking import MaskingConfig, choose

__all__ = ["MaskedAutoencoder", "MaskedCodes", "MaskedReconstruction", "TokenizerTraining"]


def _head(dim: int, out: int) -> nn.Linear:
    head = nn.Linear(dim, out)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


def check_same_recipe(encoder, other, what: str) -> None:
    """Refuse ``other`` (a tokenizer) prepared otherwise than ``encoder``, naming fields."""
    a = encoder.recipe.model_dump(mode="json")
    b = other.recipe.model_dump(mode="json")
    diffs = [f"{k}: {b.get(k)!r} (the {what}) vs {a.get(k)!r} (the data)"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]  # fmt: skip
    if diffs:
        raise ConfigError(
            f"the {what} was trained on data prepared with another recipe ({'; '.join(diffs[:4])}): "
            f"train a {what} on this corpus, or preprocess the corpus with the {what}'s recipe"
        )


class _Masked(Objective):
    """Shared by the objectives that withhold tokens from an encoder."""

    def __init__(self, encoder: nn.Module, masking: MaskingConfig | None = None):
        super().__init__()
        self.encoder = encoder
        self.masking = masking or MaskingConfig()

    @property
    def model(self) -> nn.Module:
        return self.encoder

    def withheld(self, tokens: Tokens, seeds: torch.Tensor) -> torch.Tensor:
        return choose(self.masking, tokens.mask, seeds)


class MaskedCodes(_Masked):
    """LaBraM's masked code prediction: cross-entropy on the tokenizer's code ids.

    Parameters
    ----------
    encoder : Encoder
        The model being pretrained.
    tokenizer : NeuralTokenizer
        Trained and frozen (kept in eval mode: its codebook does not move); it must share
        the encoder's recipe.
    masking : MaskingConfig
        LaBraM: random, ratio 0.5.
    symmetric : bool
        Also hide the complement in a second pass (LaBraM's symmetric masking): every
        real token is a target once per step.
    """

    kind = "masked_codes"

    def __init__(self, encoder, tokenizer, masking: MaskingConfig | None = None,
                 symmetric: bool = True):  # fmt: skip
        super().__init__(encoder, masking)
        check_same_recipe(encoder, tokenizer, "tokenizer")
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        self.symmetric = symmetric
        self.n_codes = tokenizer.config.n_codes
        self.head = _head(encoder.dim, self.n_codes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: its codebook never updates here
        return self

    def plan(self, tokens: Tokens, seeds: torch.Tensor) -> Plan:
        hidden = self.withheld(tokens, seeds)
        return Plan(targets=tokens.mask if self.symmetric else hidden, hidden=hidden)

    def forward(self, tokens: Tokens, plan: Plan) -> Loss:
        with torch.no_grad():
            codes = self.tokenizer.codes(tokens)
        hidden = plan.hidden
        if self.symmetric:
            tokens, codes = collate([tokens, tokens]), torch.cat([codes, codes])
            hidden = torch.cat([hidden, tokens.mask[: len(hidden)] & ~hidden])
        out = self.encoder(tokens, hidden=hidden)
        logits = self.head(out.tokens[hidden])
        target = codes[hidden]
        ce = F.cross_entropy(logits.float(), target, reduction="sum")
        hits = (logits.argmax(-1) == target).sum()
        majority = torch.bincount(target, minlength=self.n_codes).max() if len(target) else hits
        n = hidden.sum().float()
        return Loss(ce, n, {"accuracy": hits.float(), "majority": majority.float()})


class MaskedReconstruction(_Masked):
    """CBraMod's masked reconstruction: hide tokens, regress their raw patches (MSE).

    The target is the patch in model units (the recipe's scaling), as CBraMod's.
    """

    kind = "masked_reconstruction"

    def __init__(self, encoder, masking: MaskingConfig | None = None):
        super().__init__(encoder, masking)
        self.head = _head(encoder.dim, encoder.recipe.patch_len)

    def plan(self, tokens: Tokens, seeds: torch.Tensor) -> Plan:
        hidden = self.withheld(tokens, seeds)
        return Plan(targets=hidden, hidden=hidden)

    def forward(self, tokens: Tokens, plan: Plan) -> Loss:
        out = self.encoder(tokens, hidden=plan.hidden)
        pred = self.head(out.tokens[plan.targets]).float()
        err = (pred - tokens.x[plan.targets].float()).pow(2).mean(-1)
        return Loss(err.sum(), plan.targets.sum().float())


class MaskedAutoencoder(_Masked):
    """BrainLM's masked autoencoder: drop tokens, decode them from the visible ones.

    The encoder sees only the visible tokens (``dropped``); a light
    :class:`~neurofm.models.decoder.TokenDecoder` takes their features, a learned [MASK]
    vector in the dropped places, and reconstructs every dropped patch (MSE on those).

    Parameters
    ----------
    decoder : dict
        ``dim``, ``depth``, ``heads`` of the decoder (BrainLM: a few narrow layers).
    norm_target : bool
        Regress each patch z-scored over its samples (MAE's ``norm_pix_loss``).
    """

    kind = "mae"

    def __init__(self, encoder, masking: MaskingConfig | None = None, decoder: dict | None = None,
                 norm_target: bool = False):  # fmt: skip
        from ..models.decoder import TokenDecoder

        super().__init__(encoder, masking or MaskingConfig(ratio=0.75))
        c = encoder.config
        self.decoder = TokenDecoder(encoder.dim, **(decoder or {}), out_dim=encoder.recipe.patch_len,
                                    vocab_size=c.vocab_size, coord_frequencies=c.coord_frequencies)  # fmt: skip
        self.norm_target = norm_target
        encoder.mask_token.requires_grad_(False)  # dropped, never hidden: [MASK] unused

    def plan(self, tokens: Tokens, seeds: torch.Tensor) -> Plan:
        dropped = self.withheld(tokens, seeds)
        return Plan(targets=dropped, dropped=dropped)

    def forward(self, tokens: Tokens, plan: Plan) -> Loss:
        out = self.encoder(tokens, dropped=plan.dropped)
        fill = tokens.mask & ~out.visible
        rec = self.decoder(out.tokens, tokens, self.encoder.recipe.patch_seconds, fill=fill)
        target = tokens.x[plan.targets].float()
        if self.norm_target:
            target = (target - target.mean(-1, keepdim=True)) / (
                target.std(-1, keepdim=True) + 1e-6
            )
        err = (rec[plan.targets].float() - target).pow(2).mean(-1)
        return Loss(err.sum(), plan.targets.sum().float())


class TokenizerTraining(Objective):
    """The neural tokenizer's own objective: Fourier amplitude and phase of every real
    patch from its code, plus the codebook commitment; codebook figures in ``values``."""

    kind = "tokenizer"

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        # the encoder's [MASK] embedding is for masked modelling: nothing hides tokens here
        tokenizer.encoder.mask_token.requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        return self.tokenizer

    def plan(self, tokens: Tokens, seeds: torch.Tensor) -> Plan:
        return Plan(targets=tokens.mask)

    def forward(self, tokens: Tokens, plan: Plan) -> Loss:
        out = self.tokenizer(tokens)
        n = tokens.mask.sum().float()
        sums = {"amplitude": out.amplitude_loss.detach() * n, "phase": out.phase_loss.detach() * n,
                "commitment": out.commitment.detach() * n}  # fmt: skip
        stats = out.stats  # tensors: read (a device sync) only on the steps that log
        values = {f.name: getattr(stats, f.name) for f in fields(stats)}
        return Loss(out.token_loss.sum(), n, sums, values)
