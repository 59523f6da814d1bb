"""The training loop: one explicit loop for every objective, device and world size.

::

    pretrain("configs/pretrain/eeg_tiny_codes.yaml", overrides=["steps=50"])

Per optimizer step (nanoGPT's shape): set the learning rate (linear warmup, cosine
decay); take ``accum`` micro-batches; let the objective plan each (which tokens are
withheld; per-window seeds from the run's seed and the window's place in the global
batch); add up the targets over micro-batches and ranks; run forward and backward with
each micro-batch's loss divided by that global count (so N ranks compute what one
process computes on the same global batch); clip; step AdamW; update the EMA. Metrics
go to ``metrics.jsonl`` (and a tqdm bar); checkpoints to ``out/checkpoint`` every
``checkpoint_every`` steps and at the end; ``curves.png`` is drawn at the end.

A run killed at any moment resumes from its last checkpoint exactly: model, AdamW
moments, learning rate (a function of the step), torch's random state and the data
position (epoch and batch) are restored, ``metrics.jsonl`` is cut back to the
checkpoint's step, and every later step computes what the uninterrupted run computed
(bit for bit on the CPU).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from pathlib import Path

import torch

from ..config import load_config
from ..errors import ConfigError, NeurofmError, SignalError, logger
from ..models import create_model, load_model
from ..objectives import build_objective
from ..utils import atomic_write
from . import distributed
from .config import PretrainConfig
from .state import EMA, Position, checkpoint_folder, load_training, save_training

METRICS, CURVES, RUN_CONFIG, SUMMARY = "metrics.jsonl", "curves.png", "config.yaml", "summary.json"
SEED_STRIDE = 10**12  # per-window mask seeds: seed * SEED_STRIDE + window's global index


def lr_at(step: int, total: int, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warmup from 0 to ``lr`` over ``warmup`` steps, then cosine to ``min_lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices; none on biases, norms, tokens, tables."""
    decay, plain = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or name.endswith("_token") or "table" in name.split(".")
        (plain if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _build_model(config: PretrainConfig, recipe):
    """The model to train: a registered size with the corpus's recipe, or initial weights."""
    spec = config.model
    if spec.init is None:
        return create_model(spec.name, recipe=recipe, **spec.overrides)
    model = load_model(spec.init)
    if model.recipe.model_dump() != recipe.model_dump():
        raise ConfigError(f"model.init={spec.init!r} was trained with another recipe than the "
                          f"corpus {config.data.corpus}: preprocess the corpus with its recipe")  # fmt: skip
    return model


def _dataset(config: PretrainConfig, d: distributed.Dist):
    from ..data import ShardDataset

    spec = config.data
    return ShardDataset(spec.corpus, split=spec.split, seed=config.seed, batch_size=spec.batch_size,
                        mix=spec.mix, bucket=spec.bucket, rank=d.rank, world_size=d.world)  # fmt: skip


def _stream(dataset, workers: int, pos: Position):
    """``(epoch, batch index, Tokens)`` from ``pos`` onwards, epoch after epoch."""
    epoch, start = pos.epoch, pos.batch
    while True:
        dataset.set_epoch(epoch, start)
        source = dataset
        if workers:
            # its own generator: creating workers draws their base seed from it, never from
            # torch's global state (dropout's), which a resumed run restores exactly
            source = torch.utils.data.DataLoader(
                dataset, batch_size=None, num_workers=workers,
                generator=torch.Generator().manual_seed(epoch))  # fmt: skip
        n = start
        for item in itertools.islice(source, start, None):  # the first `start` are None
            tokens = item[0] if isinstance(item, tuple | list) else item
            yield epoch, n, tokens
            n += 1
        if n == start:
            raise NeurofmError(f"epoch {epoch} of the data yielded no batch after batch {start}")
        epoch, start = epoch + 1, 0


def _autocast(config: PretrainConfig, device: torch.device):
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step; cut back on resume."""

    def __init__(self, path: Path, keep_until: int):
        self.path = path
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= keep_until]
        atomic_write(path, lambda p: p.write_text("".join(ln + "\n" for ln in kept)))
        self.fh = open(path, "a")

    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def read_metrics(out) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(out) / METRICS
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def pretrain(config, overrides=(), *, data=None) -> dict:
    """Run (or resume) a pretraining run; returns its summary (also ``summary.json``).

    Parameters
    ----------
    config : PretrainConfig | dict | path
        The run (see :class:`~neurofm.train.config.PretrainConfig`).
    overrides : ``"key.sub=value"`` strings applied on top.
    data : optional
        Batches to train on instead of ``config.data.corpus``: an object with ``recipe``,
        ``set_epoch(epoch, start)`` and iteration yielding ``Tokens`` or
        ``(Tokens, labels)`` (a :class:`~neurofm.data.ShardDataset` is one), already
        holding this rank's share.
    """
    if not isinstance(config, PretrainConfig):
        config = load_config(config, PretrainConfig, overrides)
    elif overrides:
        config = load_config(config.model_dump(), PretrainConfig, overrides)
    if config.threads:
        torch.set_num_threads(config.threads)
    d = distributed.setup(config.device)
    try:
        return _run(config, d, data)
    finally:
        distributed.teardown()


def _run(config: PretrainConfig, d: distributed.Dist, data) -> dict:
    from tqdm.auto import tqdm

    out = Path(config.out).expanduser()
    run_config = config.model_dump(mode="json")
    dataset = data if data is not None else _dataset(config, d)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = _build_model(config, dataset.recipe)
    objective = build_objective(config.objective, model).to(d.device)
    parallel = config.parallel
    if parallel == "auto":
        parallel = "fsdp" if config.model.name.endswith(("-large", "-huge")) else "ddp"
    if parallel == "fsdp" and config.optim.ema is not None:
        raise ConfigError("optim.ema is not supported with FSDP2 (parallel: fsdp): the EMA "
                          "would need the whole model on each rank; use parallel: ddp or no ema")  # fmt: skip
    ema = EMA(objective.model, config.optim.ema) if config.optim.ema else None
    wrapped = distributed.wrap(objective, d, parallel)
    if config.compile:
        for m in objective.modules():
            if hasattr(m, "compile") and type(m).__name__ == "Encoder":
                m.compile()
    o = config.optim
    fused = {"fused": True} if d.device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(param_groups(objective, o.weight_decay), lr=o.lr, betas=o.betas,
                                  eps=o.eps, **fused)  # fmt: skip
    pos = Position()
    folder = checkpoint_folder(out) if config.resume else None
    if folder is not None:
        pos = load_training(folder, wrapped, optimizer, ema, d, run_config)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / RUN_CONFIG, lambda p: p.write_text(_yaml(run_config)))
    log = MetricsLog(out / METRICS, pos.step) if d.main else None
    stream = _stream(dataset, config.data.workers if data is None else 0, pos)
    autocast = _autocast(config, d.device)
    params = [p for p in objective.parameters() if p.requires_grad]
    bar = tqdm(total=config.steps, initial=pos.step, unit="step", desc=f"pretrain {objective.kind}",
               disable=not (config.progress and d.main))  # fmt: skip
    no_sync = getattr(wrapped, "no_sync", None)
    logger.info("pretraining %s (%s, %.2fM parameters) on %s, world %d, from step %d",
                config.model.name, objective.kind, sum(p.numel() for p in params) / 1e6, d.device,
                d.world, pos.step)  # fmt: skip
    wrapped.train()
    last = {}
    try:
        for step in range(pos.step, config.steps):
            started = time.perf_counter()
            lr = lr_at(step, config.steps, o.lr, o.min_lr, o.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = []
            for j in range(o.accum):
                epoch, index, tokens = next(stream)
                first = ((step * o.accum + j) * d.world + d.rank) * config.data.batch_size
                seeds = config.seed * SEED_STRIDE + first + torch.arange(len(tokens))
                plan = objective.plan(tokens, seeds)
                if d.device.type != "cpu":
                    model.check_tokens(tokens)  # once, on the CPU copy (the forward skips it)
                micro.append((tokens.to(d.device), plan.to(d.device)))
                pos.epoch, pos.batch = epoch, index + 1
            count = distributed.all_sum(
                sum(p.targets.sum() for _, p in micro).double().to(d.device), d
            )
            n_targets = count.item()
            if n_targets == 0:
                raise SignalError(f"step {step}: the batch holds no target token (all padding?)")
            total, sums, values = torch.zeros((), dtype=torch.float64, device=d.device), {}, {}
            for j, (tokens, plan) in enumerate(micro):
                sync = no_sync if (no_sync and j < len(micro) - 1) else contextlib.nullcontext
                with sync(), autocast():
                    loss = wrapped(tokens, plan)
                (loss.total * (d.world / n_targets)).backward()
                total += loss.total.detach().double()
                for k, v in loss.sums.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().double()
                values = loss.values
            norm = None
            if o.clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, o.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(objective.model)
            real = distributed.all_sum(torch.tensor([float(sum(t.mask.sum() for t, _ in micro)),
                                                      float(sum(len(t) for t, _ in micro))],
                                                     dtype=torch.float64, device=d.device), d)  # fmt: skip
            pos.tokens += int(real[0])
            pos.windows += int(real[1])
            pos.step = step + 1
            loss_value = (distributed.all_sum(total, d) / count).item()
            if not math.isfinite(loss_value):
                raise SignalError(
                    f"step {step}: the loss is {loss_value} (not finite); the last checkpoint "
                    "is unchanged. Lower optim.lr or raise optim.warmup_steps, set optim.clip, "
                    "or check the corpus for extreme values (the recipe's clip)"
                )
            seconds = time.perf_counter() - started
            pos.seconds += seconds
            bar.update()
            if pos.step % config.log_every == 0 or step == 0 or pos.step == config.steps:
                row = {"step": pos.step, "epoch": pos.epoch, "lr": lr, "loss": loss_value}
                for k, v in sums.items():
                    row[k] = (distributed.all_sum(v, d) / count).item()
                row |= {k: float(v) for k, v in values.items()}
                if norm is not None:
                    row["grad_norm"] = float(norm)
                row |= {"tokens_per_s": float(real[0]) / seconds, "windows": pos.windows,
                        "seconds": round(pos.seconds, 3)}  # fmt: skip
                last = row
                bar.set_postfix(loss=f"{loss_value:.4g}")
                if log is not None:
                    log.write(row)
            if pos.step % config.checkpoint_every == 0 or pos.step == config.steps:
                save_training(out, wrapped, optimizer, ema, pos, d, run_config)
    finally:
        bar.close()
        if log is not None:
            log.close()
    summary = {"out": str(out), "steps": pos.step, "objective": objective.kind,
               "model": config.model.name, "world_size": d.world, "windows": pos.windows,
               "tokens": pos.tokens, "seconds": round(pos.seconds, 2), "last": last,
               "checkpoint": str(out / "checkpoint")}  # fmt: skip
    if d.main:
        atomic_write(out / SUMMARY, lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
        if config.plot:
            from ..viz import plot_curves

            plot_curves(
                read_metrics(out), out / CURVES, title=f"{config.model.name}: {objective.kind}"
            )
    return summary


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
