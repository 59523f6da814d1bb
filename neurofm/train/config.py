"""``neurofm pretrain CONFIG.yaml``: what to train, on what, how long, where to write it.

A config is read top to bottom (examples in ``configs/pretrain/``)::

    out: runs/eeg-tiny-codes          # the run folder (resumed if it holds a checkpoint)
    steps: 2000                       # optimizer steps
    model: {name: eeg-tiny}           # a registered size; overrides: {drop_path: 0.1}
    objective: {kind: masked_codes, tokenizer: runs/tokenizer-tiny/checkpoint}
    data: {corpus: out/corpora/shared_eeg, batch_size: 32, workers: 2}
    optim: {lr: 5e-4, warmup_steps: 100, weight_decay: 0.05, clip: 3.0}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import StrictConfig
from ..objectives import ObjectiveConfig


class ModelSpec(StrictConfig):
    """The model being trained: a registered size, optionally changed or initialised."""

    name: str = Field(description="a registered model: eeg-tiny, eeg-base, fmri-tiny, "
                                  "tokenizer-tiny ... (neurofm models)")  # fmt: skip
    overrides: dict = Field(default_factory=dict,
                            description="config fields to change, e.g. {drop_path: 0.1}")  # fmt: skip
    init: str | None = Field(None, description="start from these weights (a checkpoint "
                                               "folder or weights name) instead of random")  # fmt: skip


class DataSpec(StrictConfig):
    """Where the windows come from: a corpus made by ``neurofm preprocess``."""

    corpus: str = Field(description="the out folder of `neurofm preprocess`")
    split: str | None = Field(None, description="only shards of this split (e.g. train)")
    batch_size: int = Field(32, gt=0, description="windows per micro-batch on each rank")
    workers: int = Field(2, ge=0, description="DataLoader processes per rank")
    mix: int = Field(4, gt=0, description="shards whose windows are shuffled together")
    bucket: bool = Field(True, description="batch windows of one montage together")


class OptimSpec(StrictConfig):
    """AdamW with warmup and a cosine decay; accumulation, clipping, optional EMA."""

    lr: float = Field(5e-4, gt=0, description="peak learning rate, after warmup")
    min_lr: float = Field(1e-5, ge=0, description="the cosine's floor, reached at the last step")
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.05, ge=0, description="not on biases, norms, embeddings")
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    clip: float | None = Field(3.0, gt=0, description="max gradient norm; null: none")
    accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of the weights "
                                                           "(e.g. 0.999); the EMA is saved")  # fmt: skip


class PretrainConfig(StrictConfig):
    """One pretraining run (``neurofm pretrain``, :func:`neurofm.train.pretrain`)."""

    out: str = Field(description="the run folder: checkpoint/, metrics.jsonl, curves.png")
    steps: int = Field(gt=0, description="optimizer steps in all (resume continues to it)")
    model: ModelSpec
    objective: ObjectiveConfig
    data: DataSpec
    optim: OptimSpec = OptimSpec()
    seed: int = Field(0, ge=0)
    log_every: int = Field(10, gt=0, description="steps between metric lines")
    checkpoint_every: int = Field(200, gt=0, description="steps between checkpoints")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on GPU, fp32 on CPU"
    )
    parallel: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="under torchrun: auto is FSDP2 for large/huge sizes, else DDP"
    )
    compile: bool = Field(False, description="torch.compile the Transformer blocks")
    threads: int | None = Field(None, gt=0, description="torch CPU threads (None: torch's)")
    resume: bool = Field(True, description="continue from out/checkpoint when it exists")
    progress: bool = Field(True, description="a tqdm bar on rank 0")
    plot: bool = Field(True, description="curves.png at the end")

    @model_validator(mode="after")
    def _check(self):
        if self.optim.min_lr > self.optim.lr:
            raise ValueError(f"optim.min_lr={self.optim.min_lr} is above optim.lr={self.optim.lr}")
        return self
