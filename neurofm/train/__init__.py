"""Pretraining: one explicit loop (:mod:`.loop`), its checkpoints (:mod:`.state`), the
distributed set-up from ``torchrun``'s environment (:mod:`.distributed`) and the
config (:mod:`.config`).

>>> from neurofm.train import pretrain
>>> pretrain("configs/pretrain/eeg_tiny_tokenizer.yaml", ["steps=100"])

or ``neurofm pretrain CONFIG.yaml [key=value ...]``, and
``torchrun --nproc-per-node=N -m neurofm pretrain CONFIG.yaml`` on several GPUs.
"""

from .config import DataSpec, ModelSpec, OptimSpec, PretrainConfig
from .loop import lr_at, param_groups, pretrain, read_metrics
from .state import Position

__all__ = ["DataSpec", "ModelSpec", "OptimSpec", "Position", "PretrainConfig", "lr_at",
           "param_groups", "pretrain", "read_metrics"]  # fmt: skip
