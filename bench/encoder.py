"""Encoder speed: neurofm vs braindecode's Labram on the same weights, in one run.

    python bench/encoder.py            # CPU, LaBraM-base geometry (what the README reports)
    python bench/encoder.py --device cuda   # GPU: bf16, model FLOPs utilisation
    python bench/encoder.py --smoke    # seconds; checks the script itself (used by tests)

Prints, for batch 64 of 23 channels x 10 one-second patches:
1. windows/s for inference and for a training step (AdamW), both models, and the ratio;
2. the same in bf16 (both models cast, CPU AMX or GPU tensor cores);
3. achieved GFLOP/s of the neurofm encoder against a large matmul timed in this run;
4. time and peak memory against window length (64 channels x 4 ... 64 s), full vs
   divided attention, each point in its own process so peak memory is its own; plotted
   to ``--plot`` (default ``out/encoder_length_sweep.png``);
5. (CPU, Linux) the fp32 comparison again in a process whose glibc malloc keeps freed
   memory (GLIBC_TUNABLES mmap_max=0, no trimming): large tensors then stop costing
   fresh zeroed pages on every call, which changes the reference's speed most;
6. (``--kernels``, default on CUDA) neurofm alone with each attention kernel (sdpa, flex,
   flash_attn, math) and head padding (0 or 8): forward and training windows/s, and why a
   kernel fell back to SDPA where it did.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

CHANNELS = "FP1 FP2 F7 F3 FZ F4 F8 T7 C3 CZ C4 T8 P7 P3 PZ P4 P8 O1 O2 FT9 FT10 FC1 FC2".split()


def timeit(fn, repeat: int, sync=lambda: None) -> float:
    """Best-of-``repeat`` seconds per call after one warm-up call."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(device, dtype, n=4096, repeat=3) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return 2 * n**3 / timeit(lambda: a @ b, repeat, sync) / 1e9


def build(batch: int, n_patches: int, device: str):
    from braindecode.models import Labram

    from neurofm.channels import eeg_vocabulary, map_channels
    from neurofm.models import from_labram
    from neurofm.tokens import Tokens

    torch.manual_seed(0)
    ref = Labram(n_chans=len(CHANNELS), n_times=200 * n_patches, n_outputs=2, sfreq=200,
                 qkv_bias=True)  # fmt: skip
    model = from_labram(ref)
    canon = [c.name for c in map_channels(CHANNELS).channels]
    vocab = eeg_vocabulary()
    S = len(CHANNELS)
    x = torch.randn(batch, S, 200 * n_patches)
    tokens = Tokens(
        x=x.reshape(batch, S, n_patches, 200),
        space=torch.as_tensor(vocab.ids(canon)).expand(batch, -1).clone(),
        pos=torch.zeros(batch, S, 3),
        t=torch.arange(n_patches, dtype=torch.float32).expand(batch, -1).clone(),
        mask=torch.ones(batch, S, n_patches, dtype=torch.bool),
    )
    return ref.to(device), model.to(device), x.to(device), tokens.to(device)


def compare(args) -> dict:
    device = args.device
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ref, model, x, tokens = build(args.batch, args.patches, device)
    B = args.batch

    data = {"x": x, "tokens": tokens}  # what both models read (cast to bf16 below)

    def ref_features():
        return ref(data["x"], ch_names=CHANNELS, return_features=True)["features"]

    def ours():
        return model(data["tokens"]).tokens

    # same weights, same input: the outputs agree before anything is timed
    ref.eval()
    model.eval()
    with torch.no_grad():
        diff = (ours().flatten(1, 2) - ref_features()).abs().max().item()
    results = {"max_abs_diff": diff, "batch": B, "tokens": len(CHANNELS) * args.patches + 1}

    def train_step(fn, net):
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step():
            loss = fn().float().pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    precisions = args.precisions or (["fp32", "bf16"] if device == "cpu" else ["bf16"])
    for precision in precisions:
        # fresh copies of the same weights for each precision (training steps move them)
        ref, model, x, tokens = build(args.batch, args.patches, device)
        if precision == "bf16":
            ref.to(torch.bfloat16)
            model.to(torch.bfloat16)
            x, tokens = x.to(torch.bfloat16), tokens.to(dtype=torch.bfloat16)
        data.update(x=x, tokens=tokens)
        row = {}
        for name, fn, net in (("braindecode", ref_features, ref), ("neurofm", ours, model)):
            net.eval()
            with torch.inference_mode():
                fwd = timeit(fn, args.repeat, sync)
            net.train()
            trn = timeit(train_step(fn, net), args.repeat, sync)
            row[name] = {"forward_wps": B / fwd, "train_wps": B / trn}
        row["forward_ratio"] = row["neurofm"]["forward_wps"] / row["braindecode"]["forward_wps"]
        row["train_ratio"] = row["neurofm"]["train_wps"] / row["braindecode"]["train_wps"]
        flops = model.flops_per_window(len(CHANNELS), args.patches)
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        peak = matmul_gflops(device, dtype)
        achieved = flops * row["neurofm"]["forward_wps"] / 1e9
        row.update(gflop_per_window=flops / 1e9, achieved_gflops=achieved,
                   matmul_gflops=peak, fraction_of_matmul=achieved / peak)  # fmt: skip
        results[precision] = row
    return results


def kernels(args) -> list[dict]:
    """neurofm alone with each attention kernel and head padding, same weights (bf16 on
    CUDA, fp32 on CPU): does padding head dim 20 to 24 let flash kernels run, and which
    kernel is fastest here. A kernel that does not apply falls back to SDPA (noted)."""
    from neurofm.models.layers import attention

    device = args.device
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    _, model, _, tokens = build(args.batch, args.patches, device)
    if device == "cuda":
        model, tokens = model.to(torch.bfloat16), tokens.to(dtype=torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        model(tokens).tokens.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rows = []
    for impl in ("sdpa", "flex", "flash_attn", "math"):
        for pad in (0, 8):
            attention._warned.clear()
            for blk in model.blocks:
                blk.attn.impl, blk.attn.pad_to = impl, pad
            model.eval()
            with torch.inference_mode():
                fwd = timeit(lambda: model(tokens), args.repeat, sync)
            model.train()
            trn = timeit(step, args.repeat, sync)
            rows.append({"impl": impl, "pad_head_dim": pad, "forward_wps": args.batch / fwd,
                         "train_wps": args.batch / trn,
                         "fell_back": sorted(r for i, r in attention._warned if i == impl)})  # fmt: skip
    return rows


# ---------------------------------------------------------------------- length sweep
def one_point(args) -> dict:
    """One (attention, seconds) point, run in a fresh process: time and peak RSS."""
    from neurofm.models import create_model
    from neurofm.tokens import Tokens
    from neurofm.utils import peak_rss_mib, rss_mib

    torch.manual_seed(0)
    extra = {"cls_token": False} if args.attention == "divided" else {}
    model = create_model(args.size, attention=args.attention, **extra).to(args.device)
    S, N, B = 64, args.seconds, args.batch
    tokens = Tokens(
        x=torch.randn(B, S, N, 200), space=torch.randint(2, 300, (B, S)),
        pos=torch.randn(B, S, 3) * 50, t=torch.arange(N).float().expand(B, -1).clone(),
        mask=torch.ones(B, S, N, dtype=torch.bool),
    ).to(args.device)  # fmt: skip
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    base = rss_mib()
    reset_peak = Path("/proc/self/clear_refs")
    if reset_peak.exists():  # Linux: restart VmHWM (peak RSS) from the current RSS
        reset_peak.write_text("5")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        out = model(tokens).pooled.pow(2).mean()
        out.backward()
        model.zero_grad(set_to_none=True)

    seconds = timeit(step, 1, sync)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mib() - base
    return {"step_s": seconds, "peak_mib": peak}


def sweep(args) -> list[dict]:
    from tqdm import tqdm

    rows = []
    points = [(a, s) for s in args.lengths for a in ("full", "divided")]
    for attention, seconds in tqdm(points, desc="length sweep", disable=args.smoke):
        cmd = [sys.executable, __file__, "--point", "--attention", attention,
               "--seconds", str(seconds), "--size", args.size, "--device", args.device,
               "--batch", str(args.sweep_batch)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append({"attention": attention, "seconds": seconds, "tokens": 64 * seconds,
                     **json.loads(out.stdout.strip().splitlines()[-1])})  # fmt: skip
    return rows


def plot_sweep(rows: list[dict], path: str, title: str) -> None:
    """Step time and peak memory against tokens per window, full vs divided, log-log."""
    from neurofm.viz import plot_loglog

    panels = (("step_s", "seconds per step"), ("peak_mib", "peak MiB"))
    plot_loglog(rows, path, title, x="tokens", series="attention", panels=panels)
    print(f"\nplot: {path}")


TUNED_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"


def tuned_malloc(args) -> dict | None:
    """The fp32 comparison in a child process with glibc's malloc told to keep memory."""
    if args.device != "cpu" or not sys.platform.startswith("linux"):
        return None
    cmd = [sys.executable, __file__, "--compare-only", "--precisions", "fp32", "--batch",
           str(args.batch), "--patches", str(args.patches), "--repeat", str(args.repeat)]  # fmt: skip
    env = {**os.environ, "GLIBC_TUNABLES": TUNED_MALLOC}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["fp32"]


def report(results: dict, rows: list[dict], args, tuned: dict | None = None,
           kernel_rows: list[dict] | None = None) -> None:  # fmt: skip
    print(f"\nneurofm vs braindecode Labram, same weights (max |diff| "
          f"{results['max_abs_diff']:.1e}), batch {results['batch']}, "
          f"{len(CHANNELS)} ch x {args.patches} patches ({results['tokens']} tokens), "
          f"{args.device}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'precision':<9} {'model':<12} {'forward win/s':>14} {'train win/s':>12}")
    for precision in ("fp32", "bf16"):
        if precision not in results:
            continue
        row = results[precision]
        for name in ("braindecode", "neurofm"):
            print(f"{precision:<9} {name:<12} {row[name]['forward_wps']:>14.1f} "
                  f"{row[name]['train_wps']:>12.1f}")  # fmt: skip
        print(f"{precision:<9} {'ratio':<12} {row['forward_ratio']:>13.2f}x "
              f"{row['train_ratio']:>11.2f}x")  # fmt: skip
        print(
            f"{precision:<9} encoder {row['achieved_gflops']:.0f} GFLOP/s "
            f"({row['gflop_per_window']:.2f} GFLOP/window) = "
            f"{row['fraction_of_matmul']:.0%} of a 4096^2 matmul's {row['matmul_gflops']:.0f}"
        )
    if tuned:
        print(f"\nfp32 again with GLIBC_TUNABLES={TUNED_MALLOC}")
        for name in ("braindecode", "neurofm"):
            print(f"{'fp32':<9} {name:<12} {tuned[name]['forward_wps']:>14.1f} "
                  f"{tuned[name]['train_wps']:>12.1f}")  # fmt: skip
        print(f"{'fp32':<9} {'ratio':<12} {tuned['forward_ratio']:>13.2f}x "
              f"{tuned['train_ratio']:>11.2f}x")  # fmt: skip
    if kernel_rows:
        print(f"\nneurofm by attention kernel ({'bf16' if args.device == 'cuda' else 'fp32'})")
        print(f"{'impl':<11} {'pad_head_dim':>12} {'forward win/s':>14} {'train win/s':>12}")
        for r in kernel_rows:
            note = f"  (SDPA: {'; '.join(r['fell_back'])})" if r["fell_back"] else ""
            print(f"{r['impl']:<11} {r['pad_head_dim']:>12} {r['forward_wps']:>14.1f} "
                  f"{r['train_wps']:>12.1f}{note}")  # fmt: skip
    if rows:
        print(
            f"\n{args.size}, training step (forward + backward), batch {args.sweep_batch}, "
            "64 channels; peak = RSS above the loaded model (CPU) or CUDA peak allocated"
        )
        print(f"{'seconds':>8} {'tokens':>7} {'full s':>8} {'full MiB':>9} "
              f"{'divided s':>10} {'divided MiB':>12}")  # fmt: skip
        for seconds in args.lengths:
            f = next(r for r in rows if r["seconds"] == seconds and r["attention"] == "full")
            d = next(r for r in rows if r["seconds"] == seconds and r["attention"] == "divided")
            print(f"{seconds:>8} {64 * seconds:>7} {f['step_s']:>8.2f} {f['peak_mib']:>9.0f} "
                  f"{d['step_s']:>10.2f} {d['peak_mib']:>12.0f}")  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--patches", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", default="eeg-base")
    p.add_argument("--lengths", type=int, nargs="*", default=[4, 8, 16, 32, 64])
    p.add_argument("--sweep-batch", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--plot", default="out/encoder_length_sweep.png", help="length sweep plot")
    p.add_argument("--precisions", nargs="*", choices=["fp32", "bf16"], help="default: both (CPU)")
    p.add_argument("--no-malloc-run", action="store_true", help="skip item 5 (tuned malloc)")
    p.add_argument("--kernels", action=argparse.BooleanOptionalAction, default=None,
                   help="item 6, each attention kernel and head padding (default: on CUDA)")  # fmt: skip
    p.add_argument("--compare-only", action="store_true", help=argparse.SUPPRESS)
    # one sweep point (internal)
    p.add_argument("--point", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--attention", default="full", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.point:
        print(json.dumps(one_point(args)))
        return
    if args.smoke:
        args.batch, args.patches, args.repeat = 2, 2, 1
        args.size, args.lengths = "eeg-tiny", [2]
    results = compare(args)
    if args.compare_only:
        print(json.dumps(results))
        return
    tuned = None if args.no_malloc_run or args.smoke else tuned_malloc(args)
    run_kernels = args.kernels if args.kernels is not None else args.device == "cuda"
    kernel_rows = kernels(args) if run_kernels else None
    rows = sweep(args) if args.lengths else []
    report(results, rows, args, tuned, kernel_rows)
    if rows and args.plot:
        plot_sweep(rows, args.plot, f"{args.size} training step against window length, "
                   f"batch {args.sweep_batch}, {args.device}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"compare": results, "tuned_malloc": tuned, "kernels": kernel_rows,
                       "sweep": rows}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
