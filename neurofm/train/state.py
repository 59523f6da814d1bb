"""A run's checkpoint: the model as a neurofm checkpoint, plus everything to resume it.

``<out>/checkpoint/`` is one folder, switched atomically from one save to the next (a
kill at any moment leaves the previous checkpoint or the new one)::

    config.json, model.safetensors   the trained model (its EMA weights when optim.ema
                                     is set): neurofm.load_model("<out>/checkpoint")
    objective.safetensors            the whole objective: model, head, decoder
    optimizer.safetensors            AdamW's moments (param groups and steps: state.json)
    rng.safetensors                  torch's random state of every rank
    ema.safetensors                  the EMA weights (optim.ema only)
    state.json                       step, data position, learning rate, the run config,
                                     and the SHA-256 of every file above

Everything is safetensors and JSON, never a pickle. Optimizer and model states are
gathered as full (unsharded) tensors, keyed by parameter name, so a checkpoint written
by N DDP or FSDP2 ranks loads into one process and the other way round.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, logger, warn
from ..models.checkpoint import full_state_dict, model_files, unwrap
from ..utils import atomic_write_dir, file_sha256, interrupted_backup
from .distributed import Dist

CHECKPOINT, STATE = "checkpoint", "state.json"
OBJECTIVE, OPTIMIZER, RNG, EMA_FILE = (
    "objective.safetensors", "optimizer.safetensors", "rng.safetensors", "ema.safetensors")  # fmt: skip
#: run-config sections that must not change when a run resumes
FIXED = ("model", "objective", "data", "optim", "seed")


@dataclass
class Position:
    """Where a run stands: optimizer steps done and the next batch of the data stream."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of this epoch already consumed on each rank
    windows: int = 0  # windows trained on, all ranks
    tokens: int = 0  # real tokens trained on, all ranks
    seconds: float = 0.0  # time spent in steps


class EMA:
    """An exponential moving average of a module's floating-point state (the saved model)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {
            k: v.detach().float().clone() for k, v in unwrap(module).state_dict().items()
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in unwrap(module).state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.lerp_(v.detach().float(), 1.0 - self.decay)
            else:
                s.copy_(v)


def _prefix(objective: nn.Module) -> str:
    """The objective's attribute holding its model ('encoder.' or 'tokenizer.')."""
    for name, child in objective.named_children():
        if child is objective.model:
            return name + "."
    raise CheckpointError(f"{type(objective).__name__}.model is not one of its submodules")


def _flatten_optimizer(state: dict) -> tuple[dict, dict]:
    """Tensors (``state/<param>/<key>``) and JSON (groups, non-tensor values) of an
    optimizer state dict keyed by parameter names."""
    tensors, scalars = {}, {}
    for name, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{name}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{name}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        _, rest = key.split("/", 1)
        name, entry = rest.rsplit("/", 1)
        state.setdefault(name, {})[entry] = value
    for key, value in meta["scalars"].items():
        name, entry = key.rsplit("/", 1)
        state.setdefault(name, {})[entry] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_states(d: Dist) -> dict[str, torch.Tensor]:
    """torch's CPU (and CUDA) generator states of every rank, gathered on all ranks."""
    mine = {"cpu": torch.get_rng_state()}
    if d.device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(d.device)
    every = [mine]
    if d.active:
        every = [None] * d.world
        torch.distributed.all_gather_object(every, mine)
    return {f"rank{r}.{k}": v for r, states in enumerate(every) for k, v in states.items()}


def save_training(out: Path, wrapped: nn.Module, optimizer, ema: EMA | None, pos: Position,
                  d: Dist, run_config: dict) -> Path:  # fmt: skip
    """Write ``out/checkpoint`` (every rank calls it: gathering shards is collective)."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    objective = unwrap(wrapped)
    whole = full_state_dict(wrapped)  # collectives first, on every rank
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    optim_state = get_optimizer_state_dict(objective, optimizer, options=options)
    rng = _rng_states(d)
    if not d.main:
        return out / CHECKPOINT
    prefix = _prefix(objective)
    model_state = {k[len(prefix) :]: v for k, v in whole.items() if k.startswith(prefix)}
    if ema is not None:
        model_state = {k: v.to(model_state[k].dtype) for k, v in ema.shadow.items()}
    extra = {"training": {"objective": run_config["objective"]["kind"], "step": pos.step,
                          "windows": pos.windows, "tokens": pos.tokens,
                          "ema": run_config["optim"]["ema"]}}  # fmt: skip
    exported = model_files(objective.model, extra=extra, state=model_state)
    optim_tensors, optim_meta = _flatten_optimizer(optim_state)

    def write(folder: Path) -> None:
        exported.write(folder)
        files = {OBJECTIVE: whole, OPTIMIZER: optim_tensors, RNG: rng}
        if ema is not None:
            files[EMA_FILE] = ema.shadow
        for name, tensors in files.items():
            save_file(tensors, str(folder / name))
        state = {"position": asdict(pos), "world_size": d.world, "optimizer": optim_meta,
                 "config": run_config,
                 "sha256": {name: file_sha256(folder / name) for name in files}}  # fmt: skip
        (folder / STATE).write_text(json.dumps(state, indent=1) + "\n")

    return atomic_write_dir(out / CHECKPOINT, write)


def checkpoint_folder(out: Path) -> Path | None:
    """``out/checkpoint`` if a run saved one (or the copy an interrupted save left)."""
    folder = out / CHECKPOINT
    if (folder / STATE).is_file():
        return folder
    backup = interrupted_backup(folder)
    return backup if backup is not None and (backup / STATE).is_file() else None


def read_state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / STATE} is unreadable ({err}): delete {folder} to "
                              "start the run again, or restore the file") from None  # fmt: skip


def config_changes(saved: dict, now: dict) -> list[str]:
    """The run-config values that differ between a checkpoint and the resuming config."""
    out = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{where}.{k}" if where else k)
        elif a != b:
            out.append(f"{where}: {a!r} -> {b!r}")

    for key in FIXED:
        walk(saved.get(key), now.get(key), key)
    return out


def load_training(folder: Path, wrapped: nn.Module, optimizer, ema: EMA | None, d: Dist,
                  run_config: dict) -> Position:  # fmt: skip
    """Restore model, optimizer, EMA and RNG from ``folder``; returns the data position."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = read_state(folder)
    changes = config_changes(state.get("config", {}), run_config)
    if changes:
        raise CheckpointError(
            f"{folder} was written by a run with another config ({'; '.join(changes[:5])}): "
            "resume with the same model, objective, data, optim and seed (only steps, logging, "
            "checkpointing, device and progress may change), or give a new out folder "
            "(or resume: false there)"
        )
    for name, digest in state["sha256"].items():
        if file_sha256(folder / name) != digest:
            raise CheckpointError(f"{folder / name} does not match its checksum in {STATE}: "
                                  f"the checkpoint is damaged; delete {folder} to restart")  # fmt: skip
    objective = unwrap(wrapped)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(objective, load_file(str(folder / OBJECTIVE)), options=options)
    optim = _unflatten_optimizer(load_file(str(folder / OPTIMIZER)), state["optimizer"])
    set_optimizer_state_dict(objective, optimizer, optim, options=options)
    if ema is not None:
        if not (folder / EMA_FILE).is_file():
            raise CheckpointError(f"{folder} has no {EMA_FILE}: it was saved without optim.ema")
        ema.shadow = load_file(str(folder / EMA_FILE))
    pos = Position(**state["position"])
    if state["world_size"] == d.world:
        rng = load_file(str(folder / RNG))
        torch.set_rng_state(rng[f"rank{d.rank}.cpu"])
        if d.device.type == "cuda" and f"rank{d.rank}.cuda" in rng:
            torch.cuda.set_rng_state(rng[f"rank{d.rank}.cuda"], d.device)
    else:
        warn(f"{folder} was saved by {state['world_size']} processes, this run has {d.world}: "
             "the data position and random states cannot continue exactly; the epoch restarts "
             "at its first batch", RuntimeWarning)  # fmt: skip
        pos.batch = 0
    logger.info(
        "resumed %s at step %d (epoch %d, batch %d)", folder, pos.step, pos.epoch, pos.batch
    )
    return pos
