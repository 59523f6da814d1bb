"""Pretraining step speed: neurofm's masked-code step vs the same step on braindecode's Labram.

    python bench/pretrain.py                  # CPU: eeg-tiny and eeg-base, batch 8 and 32
    python bench/pretrain.py --quick          # seconds; checks the script itself (tests)
    python bench/pretrain.py --gpu            # a GPU machine: bf16 MFU, largest batch, FSDP2

1. **CPU step throughput.** One LaBraM masked-code training step on windows of 64
   channels x 4 one-second patches at 200 Hz: the
   :class:`~neurofm.objectives.MaskedCodes` objective around a neurofm encoder (both
   symmetric passes: the hidden half, then its complement), cross-entropy on the
   tokenizer's code ids through a linear head, backward, AdamW (decay groups of
   :func:`~neurofm.train.param_groups`). The reference is the same step built on
   braindecode's ``Labram`` holding the same weights (the neurofm encoder is
   ``from_labram(labram)``, as in ``bench/encoder.py``: the size's dim, depth and heads
   with LaBraM's channel and time tables, where the registered size embeds coordinates
   and Fourier times; parts 2 and 3 train the registered sizes). ``Labram`` has no
   masking argument (its ``forward`` takes ``x``, ``ch_names`` and return flags only), so
   the reference inserts LaBraM's pretraining [MASK] step with a forward hook on its
   ``patch_embed``, exactly where LaBraM's ``modeling_pretrain.py`` does
   (``x * (1 - w) + mask_token * w``); everything else is braindecode's own forward, then
   a linear head of the same size with the same weights, the same cross-entropy, AdamW
   with the same groups. Hidden tokens and code ids are chosen once, outside the timed region, for both
   (codes of ``tokenizer-base``, 8192 codes, or ``tokenizer-tiny`` for eeg-tiny; the
   training loop also runs the tokenizer inside every step); the same threads; repeats
   interleaved; median seconds. On a CPU shared with other jobs, ``--threads 1`` keeps
   threads from waiting on each other. One difference remains, and it favours the
   reference: neurofm computes the patch embedding's GroupNorm statistics over the
   visible tokens only (a hidden token's content reaches nothing), while LaBraM (and the
   timed reference) uses every token's. The loss check therefore runs the first two steps
   of both with the reference's statistics made neurofm's (hooks on its GroupNorms,
   outside the timed steps): step 1 checks forward and loss, step 2 backward and AdamW;
   the timed reference's own loss on step-1 weights is printed beside them.
2. **Loader headroom.** Windows/s of ``ShardDataset(bucket=True)`` through
   ``DataLoader(batch_size=None, num_workers=2)`` (a fresh loader per epoch, as the
   training loop makes one, start-up included), divided by the windows/s of the eeg-base
   masked-code step on that loader's own batches at the same batch size. Corpus:
   ``out/corpora/shared_eeg`` when present (``neurofm preprocess
   configs/preprocess/shared_eeg.yaml``), else synthetic shards.
3. **GPU** (``--gpu``, where CUDA is available): bf16 (autocast) MFU of the eeg-base and
   eeg-large masked-code step (``Encoder.flops_per_window`` x 3 for forward + backward,
   both symmetric passes, against the device's dense bf16 peak), doubling the batch until
   it does not fit, and FSDP2 peak memory per GPU where there are several GPUs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
#: eegmmidb's 64-channel 10-10 montage: every name has a LaBraM row and a neurofm id
CHANNELS = (
    "FC5 FC3 FC1 FCz FC2 FC4 FC6 C5 C3 C1 Cz C2 C4 C6 CP5 CP3 CP1 CPz CP2 CP4 CP6 Fp1 Fpz Fp2 "
    "AF7 AF3 AFz AF4 AF8 F7 F5 F3 F1 Fz F2 F4 F6 F8 FT7 FT8 T7 T8 T9 T10 TP7 TP8 P7 P5 P3 P1 "
    "Pz P2 P4 P6 P8 PO7 PO3 POz PO4 PO8 O1 Oz O2 Iz"
).split()
SFREQ, PATCH = 200, 200
WEIGHT_DECAY, LR = 0.05, 1e-4
LOSS_RTOL = 1e-4  # relative; fp32, same weights, same tokens, same codes
#: dense bf16 tensor-core peak (TFLOP/s, no sparsity) by a piece of the device name
PEAK_BF16 = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
    "GH200": 989.0, "B200": 2250.0, "B100": 1750.0, "A100": 312.0, "A800": 312.0,
    "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0,
    "RTX 6000 Ada": 365.0, "A6000": 155.0, "V100": 125.0,
}  # fmt: skip
GPU_MISSING = "GPU: not available here; run `python bench/pretrain.py --gpu` on a GPU machine"


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average": None if load is None else [round(v, 2) for v in load],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip


def make_tokens(batch: int, channels: list[str], n_patches: int, seed: int = 0):
    """Random windows (B, S, N, P) of named channels, every token real; and (B, S, T)."""
    from neurofm.channels import eeg_vocabulary, map_channels
    from neurofm.tokens import Tokens

    g = torch.Generator().manual_seed(seed)
    S = len(channels)
    x = torch.randn(batch, S, n_patches * PATCH, generator=g)
    ids = eeg_vocabulary().ids([c.name for c in map_channels(channels).channels])
    tokens = Tokens(
        x=x.reshape(batch, S, n_patches, PATCH), space=torch.as_tensor(ids).expand(batch, -1).clone(),
        pos=torch.zeros(batch, S, 3), t=torch.arange(n_patches, dtype=torch.float32).expand(batch, -1).clone(),
        mask=torch.ones(batch, S, n_patches, dtype=torch.bool),
    )  # fmt: skip
    return tokens, x


class FixedCodes(torch.nn.Module):
    """Stands in for the frozen tokenizer: the code ids computed once, before timing."""

    def __init__(self, ids: torch.Tensor):
        super().__init__()
        self.ids = ids

    def codes(self, tokens):
        return self.ids


def tokenizer_for(size: str) -> str:
    """The tokenizer whose codes an encoder of ``size`` predicts (LaBraM: 8192 codes)."""
    return "tokenizer-tiny" if size.endswith("-tiny") else "tokenizer-base"


def masked_codes(encoder, size: str):
    """A MaskedCodes objective around ``encoder`` and the tokenizer of its codes."""
    from neurofm.models import create_model
    from neurofm.objectives import MaskedCodes

    tokenizer = create_model(tokenizer_for(size), recipe=encoder.recipe)
    tokenizer = tokenizer.to(next(encoder.parameters()).device)
    return MaskedCodes(encoder, tokenizer), tokenizer


def fix_codes(objective, tokenizer, tokens, seeds):
    """Compute the batch's code ids now (not in the timed step) and plan the hidden
    tokens (on the CPU, as the training loop does); returns (plan, seconds planning took)."""
    chunk = 256  # windows per tokenizer call: a large batch's codes without its memory
    ids = [tokenizer.codes(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)]
    objective.tokenizer = FixedCodes(torch.cat(ids))
    start = time.perf_counter()
    plan = objective.plan(tokens.to("cpu"), seeds)
    return plan.to(tokens.x.device), time.perf_counter() - start


def adamw(module, fused: bool = False):
    from neurofm.train import param_groups

    return torch.optim.AdamW(param_groups(module, WEIGHT_DECAY), lr=LR,
                             **({"fused": True} if fused else {}))  # fmt: skip


def neurofm_step(objective, tokens, plan, autocast=None):
    """The training loop's step for one micro-batch, without accumulation or clipping."""
    import contextlib

    optimizer = adamw(objective, fused=tokens.x.device.type == "cuda")
    ctx = autocast or contextlib.nullcontext

    def step() -> float:
        with ctx():
            loss = objective(tokens, plan)
        (loss.total / loss.count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return (loss.total / loss.count).item()

    return step


# ---------------------------------------------------------------- 1. the reference step
class LabramCodes(torch.nn.Module):
    """LaBraM's masked code prediction on braindecode's ``Labram``: [MASK] replaces the
    hidden tokens' patch embeddings (a forward hook: ``Labram.forward`` takes no mask),
    braindecode's forward does the rest, a linear head predicts the code ids."""

    def __init__(self, labram, mask_token: torch.Tensor, head: torch.nn.Linear, channels):
        super().__init__()
        self.labram, self.head, self.channels = labram, head, list(channels)
        self.mask_token = torch.nn.Parameter(mask_token.detach().clone())
        self.neurofm_stats = False  # the loss check: GroupNorm statistics as neurofm's
        self._hidden = None
        labram.patch_embed.register_forward_hook(self._hide)
        conv = labram.patch_embed.temporal_conv
        for norm in (conv.norm1, conv.norm2, conv.norm3):
            norm.register_forward_hook(self._visible_stats)

    def _hide(self, module, args, out):
        if self._hidden is None:
            return out
        return torch.where(self._hidden[..., None], self.mask_token.to(out.dtype), out)

    def _visible_stats(self, module, args, out):
        if not self.neurofm_stats or self._hidden is None:
            return out
        from neurofm.models.layers.norm import group_norm

        return group_norm(args[0], module, ~self._hidden, "sample")

    def forward(self, x: torch.Tensor, codes: torch.Tensor, hidden: torch.Tensor):
        """x (B, S, T), codes and hidden (B, S, N): the loss summed over both passes."""
        x, codes = torch.cat([x, x]), torch.cat([codes, codes]).flatten(1)
        hidden = torch.cat([hidden, ~hidden]).flatten(1)  # every token real here
        self._hidden = hidden
        try:
            feats = self.labram(x, ch_names=self.channels, return_features=True)["features"]
        finally:
            self._hidden = None
        logits = self.head(feats[hidden])
        target = codes[hidden]
        ce = torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum")
        hits = (logits.argmax(-1) == target).sum()  # what MaskedCodes reports, too
        majority = torch.bincount(target, minlength=logits.shape[-1]).max()
        return ce, hidden.sum().float(), hits, majority

    def param_groups(self) -> list[dict]:
        """neurofm's groups under braindecode's names: no decay on biases, norms, the
        [CLS] and [MASK] tokens, the channel and time tables; the unused classifier left out."""
        decay, plain = [], []
        for name, p in self.named_parameters():
            if name.startswith("labram.final_layer."):
                continue
            exempt = (
                p.ndim < 2
                or name.endswith("_token")
                or name in ("labram.position_embedding", "labram.temporal_embedding")
            )
            (plain if exempt else decay).append(p)
        return [{"params": decay, "weight_decay": WEIGHT_DECAY},
                {"params": plain, "weight_decay": 0.0}]  # fmt: skip


def labram_pair(size: str, channels: list[str], n_patches: int):
    """braindecode's ``Labram`` at the sizes of ``size`` and a neurofm encoder holding
    its weights (``from_labram``)."""
    from braindecode.models import Labram

    from neurofm.models import from_labram, model_config
    from neurofm.models.layers import conv_out_len

    c = model_config(size)
    torch.manual_seed(0)
    ref = Labram(n_chans=len(channels), n_times=PATCH * n_patches, n_outputs=2, sfreq=SFREQ,
                 qkv_bias=True, embed_dim=c.dim, conv_out_channels=c.dim // conv_out_len(PATCH),
                 num_layers=c.depth, num_heads=c.heads, mlp_ratio=c.mlp_ratio)  # fmt: skip
    return ref, from_labram(ref, heads=c.heads)


def timed(steps: dict, repeats: int) -> dict:
    """Median seconds of each step, the steps taking turns (their order alternating);
    and every time measured."""
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, times


def compare(size: str, batch: int, args) -> dict:
    """One (size, batch) point of part 1: loss check on steps 1-2, then timed steps."""
    channels, n_patches = args.channels, args.patches
    ref, encoder = labram_pair(size, channels, n_patches)
    tokens, x = make_tokens(batch, channels, n_patches)
    objective, tokenizer = masked_codes(encoder, size)
    plan, planned = fix_codes(objective, tokenizer, tokens, torch.arange(batch))
    codes = objective.tokenizer.ids
    reference = LabramCodes(ref, encoder.mask_token, copy.deepcopy(objective.head), channels)
    objective.train()
    reference.train()
    ours = neurofm_step(objective, tokens, plan)
    optimizer = torch.optim.AdamW(reference.param_groups(), lr=LR)

    def theirs() -> float:
        ce, n = reference(x, codes, plan.hidden)[:2]
        (ce / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return (ce / n).item()

    with torch.no_grad():  # the timed reference's loss on the same first weights
        ce, n = reference(x, codes, plan.hidden)[:2]
        labram_stats = (ce / n).item()
    # steps 1 and 2 (also the warm-up): the reference with neurofm's GroupNorm statistics
    reference.neurofm_stats = True
    losses = [(ours(), theirs()) for _ in range(2)]
    reference.neurofm_stats = False  # from here on: braindecode's Labram as it is
    seconds, every = timed({"neurofm": ours, "braindecode": theirs}, args.repeats)
    tokens_per_step = batch * len(channels) * n_patches  # the loop's tokens_per_s counts these
    rel = [abs(a - b) / abs(b) for a, b in losses]
    return {
        "size": size, "batch": batch, "channels": len(channels), "patches": n_patches,
        "n_codes": objective.n_codes, "params": sum(p.numel() for p in encoder.parameters()),
        "plan_s": planned, "loss": {"neurofm": [a for a, _ in losses],
                                    "braindecode": [b for _, b in losses],
                                    "rel_diff": rel, "ok": max(rel) <= LOSS_RTOL,
                                    "labram_stats_step1": labram_stats},
        "seconds": seconds, "every_seconds": every,
        "tokens_per_s": {k: tokens_per_step / v for k, v in seconds.items()},
        "windows_per_s": {k: batch / v for k, v in seconds.items()},
        "ratio": seconds["braindecode"] / seconds["neurofm"],
    }  # fmt: skip


# ---------------------------------------------------------------- 2. loader headroom
def synthetic_corpus(folder: Path, recordings: int, seconds: float, channels: list[str],
                     window_seconds: float) -> Path:  # fmt: skip
    """Shards of synthetic EEG the way tests/test_pretrain.py's ``corpus`` fixture makes them."""
    import functools

    import neurofm
    from neurofm.data import write_shard
    from neurofm.data.shards import write_index
    from neurofm.io.datasets import Recording
    from neurofm.synthetic import eeg

    recipe = neurofm.Recipe(window_seconds=window_seconds, notch=None)
    out = folder / "corpus"
    for i in range(recordings):
        signal = functools.partial(eeg, len(channels), int(seconds * SFREQ), float(SFREQ),
                                   seed=i, line=None)  # fmt: skip
        rec = Recording(dataset="manifest", subject=f"s{i}", id=f"r{i}", array=signal,
                        sfreq=float(SFREQ), ch_names=list(channels), units="V")  # fmt: skip
        write_shard(rec, recipe, out)
    write_index(out)
    return out


def loader_rate(corpus: Path, batch: int, epochs: int, workers: int = 2) -> dict:
    """Windows/s of whole epochs, each through a fresh DataLoader (as the training loop
    makes one per epoch: worker start-up included); epoch 0 untimed (verification)."""
    from neurofm.data import ShardDataset

    ds = ShardDataset(corpus, batch_size=batch, bucket=True)  # the loop's defaults
    rates, steady = [], []
    for epoch in range(epochs + 1):
        ds.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        start = time.perf_counter()
        n = first = 0
        for tokens, _ in loader:
            if not n:
                first = time.perf_counter() - start
            n += len(tokens)
        seconds = time.perf_counter() - start
        if epoch:
            rates.append(n / seconds)
            steady.append((n - batch) / max(seconds - first, 1e-9))
    return {"windows": n, "windows_per_s": statistics.median(rates),
            "steady_windows_per_s": statistics.median(steady)}  # fmt: skip


def step_rate(corpus: Path, size: str, batch: int, repeats: int) -> dict:
    """Windows/s of the masked-code step on the first batches of the corpus."""
    from neurofm.data import ShardDataset
    from neurofm.models import create_model

    ds = ShardDataset(corpus, batch_size=batch, bucket=True)
    batches = []
    for tokens, _ in ds:
        batches.append(tokens)
        if len(batches) == repeats + 1:
            break
    torch.manual_seed(0)
    encoder = create_model(size, recipe=ds.recipe)
    objective, tokenizer = masked_codes(encoder, size)
    objective.train()
    optimizer = adamw(objective)
    windows, seconds, grids = 0, 0.0, set()
    for i, tokens in enumerate(batches):
        plan = fix_codes(objective, tokenizer, tokens, torch.arange(len(tokens)))[0]
        start = time.perf_counter()
        loss = objective(tokens, plan)
        (loss.total / loss.count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:  # the first batch warms up
            seconds += time.perf_counter() - start
            windows += len(tokens)
            grids.add(tuple(tokens.mask.shape[1:]))
    return {"windows_per_s": windows / seconds, "batches": len(batches) - 1,
            "grids": sorted(grids)}  # fmt: skip


def headroom(args) -> dict:
    corpus = Path(args.corpus) if args.corpus else ROOT / "out" / "corpora" / "shared_eeg"
    if args.corpus and not (corpus / "index.csv").exists():
        sys.exit(f"--corpus {corpus}: no index.csv there (make it with `neurofm preprocess`)")
    tmp = None
    if (args.quick and not args.corpus) or not (corpus / "index.csv").exists():
        tmp = tempfile.TemporaryDirectory()
        recs, seconds = (2, 12.0) if args.quick else (12, 120.0)
        corpus = synthetic_corpus(Path(tmp.name), recs, seconds, args.channels, args.patches)
        source = f"synthetic: {recs} recordings x {seconds:g} s, {len(args.channels)} channels"
    else:
        source = str(corpus)
    size = "eeg-tiny" if args.quick else "eeg-base"
    try:
        rows = []
        for batch in args.batch:
            load = loader_rate(corpus, batch, args.loader_epochs)
            step = step_rate(corpus, size, batch, args.repeats)
            rows.append({"batch": batch, "loader": load, "step": step,
                         "headroom": load["windows_per_s"] / step["windows_per_s"]})  # fmt: skip
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"corpus": source, "size": size, "rows": rows}


# ---------------------------------------------------------------- 3. GPU
def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key in sorted(PEAK_BF16, key=len, reverse=True):  # "H100 SXM" before "H100"
        if key.lower() in name.lower():
            return PEAK_BF16[key]
    return None


def gpu_point(size: str, batch: int, args, device: str) -> dict:
    """One bf16 masked-code step size on ``device``: seconds, MFU, peak memory."""
    from neurofm.models import create_model

    torch.manual_seed(0)
    encoder = create_model(size).to(device)
    tokens, _ = make_tokens(batch, args.channels, args.patches)
    tokens = tokens.to(device)
    objective, tokenizer = masked_codes(encoder, size)
    plan = fix_codes(objective, tokenizer, tokens, torch.arange(batch))[0]
    del tokenizer
    objective.train()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:  # a dry run of this code on the CPU
        autocast = None
    step = neurofm_step(objective, tokens, plan, autocast)
    for _ in range(2):
        step()
    sync(device)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        sync(device)
        seconds.append(time.perf_counter() - start)
    s = statistics.median(seconds)
    S, N = len(args.channels), args.patches
    flops = 3 * encoder.flops_per_window(S, N) * 2 * batch  # fwd + bwd, both passes
    head = 3 * 2 * encoder.dim * objective.n_codes * batch * S * N  # every token once
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"batch": batch, "seconds": s, "windows_per_s": batch / s,
            "encoder_tflops": flops / s / 1e12, "with_head_tflops": (flops + head) / s / 1e12,
            "peak_gib": memory}  # fmt: skip


def is_oom(err: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom) or "out of memory" in str(err).lower()


def gpu(args) -> dict | None:
    device = "cpu" if args.gpu_dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (dry run)"
    peak = peak_tflops(name, args.peak_tflops)
    precision = "bf16 autocast, fused AdamW" if device == "cuda" else "fp32, a dry run of part 3"
    result = {"device": name, "precision": precision, "peak_tflops": peak, "sizes": {}}
    for size in args.gpu_sizes:
        rows, batch = [], args.gpu_start_batch
        while batch <= args.gpu_max_batch:
            try:
                row = gpu_point(size, batch, args, device)
            except RuntimeError as err:
                if not is_oom(err):
                    raise
                rows.append({"batch": batch, "oom": True})
                break
            finally:
                if device == "cuda":
                    torch.cuda.empty_cache()
            if peak:
                row["mfu"] = row["encoder_tflops"] / peak
                row["mfu_with_head"] = row["with_head_tflops"] / peak
            rows.append(row)
            batch *= 2
        fits = [r["batch"] for r in rows if not r.get("oom")]
        result["sizes"][size] = {"rows": rows, "largest_batch": max(fits) if fits else None,
                                 "capped": bool(rows) and not rows[-1].get("oom")}  # fmt: skip
    n_gpus = torch.cuda.device_count() if device == "cuda" else 0
    if n_gpus > 1:
        result["fsdp"] = fsdp(args, n_gpus)
    else:
        result["fsdp"] = {"skipped": f"{n_gpus or 'no'} GPU: FSDP2 needs two or more"}
    return result


def fsdp(args, n_gpus: int) -> dict:
    """FSDP2 peak memory per GPU: the same step under torchrun, every GPU one rank."""
    out = {}
    for size in args.gpu_sizes:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={n_gpus}",
               __file__, "--fsdp-worker", size, "--fsdp-batch", str(args.fsdp_batch)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            out[size] = {"error": res.stderr.strip().splitlines()[-1:] or ["failed"]}
            continue
        out[size] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def fsdp_worker(size: str, batch: int, args) -> None:
    """One torchrun rank: the eeg masked-code step sharded with FSDP2, peak memory."""
    from neurofm.models import create_model
    from neurofm.train import distributed

    d = distributed.setup("cuda")
    try:
        torch.manual_seed(0)
        encoder = create_model(size).to(d.device)
        tokens, _ = make_tokens(batch, args.channels, args.patches, seed=d.rank)
        tokens = tokens.to(d.device)
        objective, tokenizer = masked_codes(encoder, size)
        plan = fix_codes(objective, tokenizer, tokens, torch.arange(batch))[0]
        del tokenizer
        distributed.wrap(objective, d, "fsdp")  # the codes are fixed: nothing else shards
        objective.train()
        torch.cuda.reset_peak_memory_stats(d.device)
        bf16 = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
        step = neurofm_step(objective, tokens, plan, bf16)
        for _ in range(3):
            step()
        torch.cuda.synchronize(d.device)
        peak = torch.cuda.max_memory_allocated(d.device) / 2**30
        peaks = [None] * d.world
        torch.distributed.all_gather_object(peaks, peak)
        if d.main:
            print(json.dumps({"world": d.world, "batch_per_gpu": batch, "peak_gib": peaks}))
    finally:
        distributed.teardown()


# ---------------------------------------------------------------- report
def report(results: dict, args) -> None:
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch "
          f"{m['torch']}, load average {m['load_average']}")  # fmt: skip
    steps = results["step"]
    if steps:
        r0 = steps[0]
        print(f"\n1. masked-code training step, fp32 CPU: {r0['channels']} ch x {r0['patches']} "
              f"patches of 1 s at {SFREQ} Hz, both symmetric passes, AdamW; median of "
              f"{args.repeats} interleaved repeats; tok/s: the batch's tokens (each goes "
              "through the encoder twice), as the training loop's tokens_per_s")  # fmt: skip
        print(f"{'size':<9} {'batch':>5} {'codes':>5} {'neurofm tok/s':>14} "
              f"{'braindecode tok/s':>18} {'ratio':>7} {'win/s':>7} {'plan ms':>8}")  # fmt: skip
        for r in steps:
            t = r["tokens_per_s"]
            print(f"{r['size']:<9} {r['batch']:>5} {r['n_codes']:>5} {t['neurofm']:>14.0f} "
                  f"{t['braindecode']:>18.0f} {r['ratio']:>6.2f}x "
                  f"{r['windows_per_s']['neurofm']:>7.2f} {1e3 * r['plan_s']:>8.1f}")  # fmt: skip
        print("ratio = braindecode seconds / neurofm seconds (goal >= 1.5x); plan = choosing "
              "the hidden tokens, outside both steps")  # fmt: skip
        print(f"\nloss check (same weights, tokens, codes; reference GroupNorm statistics as "
              f"neurofm's; tolerance {LOSS_RTOL:g} relative)")  # fmt: skip
        print(f"{'size':<9} {'batch':>5} {'step':>4} {'neurofm':>10} {'braindecode':>12} "
              f"{'rel diff':>9}  {'timed reference (LaBraM stats), step 1':>38}")  # fmt: skip
        for r in steps:
            lo = r["loss"]
            for i in range(2):
                extra = f"{lo['labram_stats_step1']:>38.6f}" if i == 0 else ""
                print(f"{r['size']:<9} {r['batch']:>5} {i + 1:>4} {lo['neurofm'][i]:>10.6f} "
                      f"{lo['braindecode'][i]:>12.6f} {lo['rel_diff'][i]:>9.1e}  {extra}")  # fmt: skip
        ok = all(r["loss"]["ok"] for r in steps)
        print(f"loss check: {'ok' if ok else 'FAILED'}")
    h = results.get("loader")
    if h:
        print(f"\n2. loader headroom: ShardDataset(bucket=True) + DataLoader(batch_size=None, "
              "num_workers=2), a fresh loader per epoch (start-up included), as the training "
              f"loop's defaults, vs the {h['size']} masked-code step (fp32 CPU) on that "
              f"loader's batches, each measured alone; corpus {h['corpus']}")  # fmt: skip
        print(f"{'batch':>5} {'loader win/s':>13} {'(steady)':>9} {'step win/s':>11} "
              f"{'headroom':>9}  step grids (S, N)")  # fmt: skip
        for r in h["rows"]:
            print(f"{r['batch']:>5} {r['loader']['windows_per_s']:>13.0f} "
                  f"{r['loader']['steady_windows_per_s']:>9.0f} {r['step']['windows_per_s']:>11.2f} "
                  f"{r['headroom']:>8.0f}x  {r['step']['grids']}")  # fmt: skip
        print("headroom = loader windows/s / step windows/s (goal >= 5x)")
    g = results.get("gpu")
    if g:
        peak = f"{g['peak_tflops']:g} TFLOP/s dense bf16" if g["peak_tflops"] else "unknown peak"
        print(f"\n3. GPU: {g['device']} ({peak}); {g['precision']}; {len(args.channels)} ch x "
              f"{args.patches} patches, median of {args.repeats} steps after 2 warm-up steps")  # fmt: skip
        print(f"{'size':<9} {'batch':>6} {'win/s':>9} {'TFLOP/s':>8} {'MFU':>6} "
              f"{'MFU+head':>9} {'peak GiB':>9}")  # fmt: skip
        for size, s in g["sizes"].items():
            for r in s["rows"]:
                if r.get("oom"):
                    print(f"{size:<9} {r['batch']:>6} out of memory")
                    continue
                mfu = f"{r['mfu']:>6.1%} {r['mfu_with_head']:>9.1%}" if "mfu" in r else " " * 16
                mem = f"{r['peak_gib']:>9.1f}" if r["peak_gib"] is not None else f"{'-':>9}"
                print(f"{size:<9} {r['batch']:>6} {r['windows_per_s']:>9.0f} "
                      f"{r['encoder_tflops']:>8.1f} {mfu} {mem}")  # fmt: skip
            cap = " (the cap: --gpu-max-batch)" if s["capped"] else ""
            print(f"{size}: largest batch that fits: {s['largest_batch']}{cap}")
        print("MFU = Encoder.flops_per_window x 3 x both passes / s / peak; +head: the "
              "code head's matmul too")  # fmt: skip
        print(f"FSDP2: {json.dumps(g['fsdp'])}")
    elif not torch.cuda.is_available():
        print(f"\n{GPU_MISSING}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["eeg-tiny", "eeg-base"])
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--json", help="also write the results here (e.g. out/bench_pretrain.json)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--gpu", action="store_true", help="part 3 only: bf16 MFU, batch, FSDP2")
    p.add_argument("--parts", nargs="+", type=int, choices=[1, 2, 3],
                   help="default: 1 2 (3 with --gpu)")  # fmt: skip
    p.add_argument("--corpus", help="part 2's shards (default out/corpora/shared_eeg if made)")
    p.add_argument("--loader-epochs", type=int, default=3)
    p.add_argument("--gpu-sizes", nargs="+", default=["eeg-base", "eeg-large"])
    p.add_argument("--gpu-start-batch", type=int, default=8)
    p.add_argument("--gpu-max-batch", type=int, default=4096)
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (TFLOP/s)")
    p.add_argument("--fsdp-batch", type=int, default=32, help="windows per GPU under FSDP2")
    p.add_argument("--gpu-dry-run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fsdp-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.channels, args.patches = CHANNELS, 4
    if args.quick:
        args.sizes, args.batch, args.repeats, args.loader_epochs = ["eeg-tiny"], [2], 1, 1
        args.channels, args.patches = CHANNELS[:16], 2
        args.gpu_sizes, args.gpu_start_batch, args.gpu_max_batch = ["eeg-tiny"], 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fsdp_worker:
        fsdp_worker(args.fsdp_worker, args.fsdp_batch, args)
        return
    parts = args.parts or ([3] if args.gpu else [1, 2])
    results = {"machine": machine(), "step": [], "loader": None, "gpu": None}
    if 1 in parts:
        results["step"] = [compare(s, b, args) for s in args.sizes for b in args.batch]
    if 2 in parts:
        results["loader"] = headroom(args)
    if 3 in parts:
        results["gpu"] = gpu(args)
    results["machine"]["load_average_after"] = machine()["load_average"]
    report(results, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if results["step"] and not all(r["loss"]["ok"] for r in results["step"]):
        sys.exit("loss check failed: the two steps do not compute the same loss")


if __name__ == "__main__":
    main()
