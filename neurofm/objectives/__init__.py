"""Pretraining objectives: masked code prediction, masked reconstruction, MAE, the tokenizer.

Each objective is an ``nn.Module`` that holds the model being trained (``.model``: an
encoder or a tokenizer) and its training-only parts (a head, a decoder), and answers two
calls (:mod:`.base`): ``plan(tokens, seeds)`` picks the tokens to withhold and the
targets; ``forward(tokens, plan)`` returns the loss as sums over the targets. A config
(``objective:`` in ``configs/pretrain/*.yaml``) names one by ``kind``:

=======================  =====================================  ==========================
kind                     what                                   from
=======================  =====================================  ==========================
``tokenizer``            VQ neural tokenizer: codes -> spectrum  LaBraM (VQ-NSP)
``masked_codes``         predict hidden tokens' code ids         LaBraM
``masked_reconstruction`` regress hidden tokens' raw patches     CBraMod
``mae``                  decode dropped tokens from the visible  BrainLM / MAE
=======================  =====================================  ==========================

``masking.kind: future`` withholds the last ``masking.patches`` patches instead of
random tokens (forecasting).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..config import StrictConfig
from .base import Loss, Objective, Plan
from .masked import MaskedAutoencoder, MaskedCodes, MaskedReconstruction, TokenizerTraining
from .masking import MaskingConfig, choose, future_tokens, random_tokens

__all__ = [
    "Loss", "MaskedAutoencoder", "MaskedCodes", "MaskedReconstruction", "MaskingConfig",
    "Objective", "ObjectiveConfig", "Plan", "TokenizerTraining", "build_objective", "choose",
    "future_tokens", "random_tokens",
]  # fmt: skip


class TokenizerObjective(StrictConfig):
    """Train the VQ neural tokenizer (``model.name``: a tokenizer size)."""

    kind: Literal["tokenizer"]


class MaskedCodesObjective(StrictConfig):
    """LaBraM: predict the hidden tokens' code ids of a trained tokenizer."""

    kind: Literal["masked_codes"]
    tokenizer: str = Field(description="a tokenizer checkpoint folder (a tokenizer run's "
                                        "checkpoint/) or weights name")  # fmt: skip
    masking: MaskingConfig = MaskingConfig()
    symmetric: bool = Field(True, description="also predict the complement (LaBraM)")


class ReconstructionObjective(StrictConfig):
    """CBraMod: regress the hidden tokens' raw patches."""

    kind: Literal["masked_reconstruction"]
    masking: MaskingConfig = MaskingConfig()


class DecoderConfig(StrictConfig):
    dim: int = Field(128, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)


class MAEObjective(StrictConfig):
    """BrainLM: drop tokens, decode them from the visible ones."""

    kind: Literal["mae"]
    masking: MaskingConfig = MaskingConfig(ratio=0.75)
    decoder: DecoderConfig = DecoderConfig()
    norm_target: bool = False


ObjectiveConfig = Annotated[
    TokenizerObjective | MaskedCodesObjective | ReconstructionObjective | MAEObjective,
    Field(discriminator="kind"),
]


def build_objective(config, model) -> Objective:
    """The objective ``config`` describes, around ``model`` (an encoder or a tokenizer)."""
    from ..errors import ConfigError
    from ..models import load_model

    kind = config.kind
    is_tokenizer = hasattr(model, "quantizer")
    if (kind == "tokenizer") != is_tokenizer:
        want = (
            "a tokenizer size (e.g. tokenizer-tiny)"
            if kind == "tokenizer"
            else "an encoder size (e.g. eeg-tiny)"
        )
        raise ConfigError(f"objective.kind={kind!r} trains {want}; model.name names a "
                          f"{type(model).__name__}")  # fmt: skip
    if kind == "tokenizer":
        return TokenizerTraining(model)
    if kind == "masked_codes":
        tokenizer = load_model(config.tokenizer, architecture="tokenizer")
        return MaskedCodes(model, tokenizer, config.masking, config.symmetric)
    if kind == "masked_reconstruction":
        return MaskedReconstruction(model, config.masking)
    return MaskedAutoencoder(model, config.masking, config.decoder.model_dump(), config.norm_target)
