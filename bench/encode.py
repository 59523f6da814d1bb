"""Encoding speed: neurofm against MNE preprocessing + braindecode's Labram, same weights.

    python bench/encode.py                 # eeg-base geometry: 200 hops, a 60-minute recording
    python bench/encode.py --minutes 10    # a shorter recording (a loaded machine)
    python bench/encode.py --threads 1 2   # latency at 1 and 2 torch threads
    python bench/encode.py --batch-threads 1 --rounds 2   # a shared machine: steadier
    python bench/encode.py --quick         # seconds: eeg-tiny sizes, checks the script (tests)

Both sides do the same job on the same synthetic EEG (64 eegmmidb channels at 160 Hz,
volts, :func:`neurofm.synthetic.eeg`: pink noise, 10 Hz alpha, 60 Hz mains) with the same
recipe (0.1-75 Hz, 60 Hz notch, resampled to 200 Hz, 100 uV units, 4 s windows of four
1 s patches), in the same run, one after the other per hop so that both meet the same load:

- **neurofm**: :class:`neurofm.stream.StreamEncoder` (causal filters with carried state,
  one ``push`` per hop of raw samples -> one mean-pooled embedding) for latency, and
  :func:`neurofm.encode` (``pooling="mean"``) for throughput.
- **reference**: MNE, as a BCI script written with it would: per hop, the newest raw
  samples appended to a buffer, ``mne.filter.filter_data`` (band-pass) and
  ``mne.filter.notch_filter`` over the buffer, ``mne.filter.resample`` of its newest 4 s,
  then braindecode's ``Labram.forward_features`` at batch 1 (mean-pooled, ``fc_norm``).
  For throughput: ``Raw.filter``, ``Raw.notch_filter``, ``Raw.resample`` of the whole
  recording, ``mne.make_fixed_length_epochs`` (4 s), Labram in batches.

**Past context of the reference.** MNE's zero-phase FIR for a 0.1 Hz high-pass at 160 Hz
is 5281 taps (33 s, ``filter_length='auto'``); on less signal MNE warns that "distortion is
likely". The reference therefore filters the last 33.5 s (the filter length rounded up to
whole hops; ``--context`` sets another) every hop and keeps the newest 4 s; neurofm's causal chain carries its state
instead and touches only the hop's new samples. Only the newest window is resampled (MNE's
FFT method, its default padding): the cheapest honest choice for the reference.

**Same weights.** A braindecode ``Labram`` with random weights (seed 0) at eeg-base's sizes
(dim 200, 12 blocks, 10 heads: the blocks' tensors are exactly those of
``create_model("eeg-base")``; the embeddings in LaBraM's layout, a learned time table) is
converted by :func:`neurofm.models.from_labram`, as ``bench/encoder.py`` does. Before
anything is timed both models encode the same preprocessed window; their pooled
features must agree within ``PARITY_TOL`` (float32).

**Threads.** Latency is batch 1 at 1 torch thread by default: on a shared 2-core machine
a second thread waits for a busy core (issue 16 measured p50/p99 84/124 ms at 1 thread
against 287/3268 ms at 2). Throughput runs at ``--batch-threads`` (default: torch's); on a
loaded machine ``--rounds 2`` alternates the two sides and keeps each one's best round.

**Do the two embeddings agree?** Each part prints the median cosine between neurofm's and
the reference's embedding of the same window. Offline (throughput) both filters are
zero-phase and it is close to 1. Per hop it is lower: the stream's causal chain delays the
signal by its group delay (13-21 ms at 5-50 Hz from 160 Hz, about 3 samples at 200 Hz;
see :mod:`neurofm.stream`), and random weights are sensitive to a 3-sample shift. Measured
once at ``eeg-tiny`` sizes: the stream against MNE's zero-phase windows of the whole
signal ending 15 ms earlier, median 0.96; ending at the same time, 0.70. It is a check that both sides encode the
same signal, not a goal.

Reported: per-hop p50/p99 of preprocessing, model and total for both, the ratio of totals
(goal: neurofm >= 2x faster) and neurofm's preprocessing share of its total (goal < 20%);
windows/s and seconds over the recording for both, and the ratio. ``--json`` writes it all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

SFREQ_IN = 160.0  # eegmmidb
LINE = 60.0
PARITY_TOL = 1e-4  # max |diff| of pooled features, float32, same window, same weights
SIZES = {"eeg-base": dict(embed_dim=200, num_layers=12, num_heads=10),
         "eeg-tiny": dict(embed_dim=100, num_layers=2, num_heads=5)}  # fmt: skip


# ---------------------------------------------------------------------- set-up
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    import braindecode
    import mne

    import neurofm

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "mne": mne.__version__,
            "braindecode": braindecode.__version__, "neurofm": neurofm.__version__,
            "numpy": np.__version__, "loadavg": [round(x, 2) for x in load]}  # fmt: skip


def channel_names() -> list[str]:
    """eegmmidb's 64 channels (the bundled recording's header), canonical 10-10 names."""
    import mne

    from neurofm.channels import map_channels

    path = files("neurofm") / "sample_data" / "S001R03.edf"
    raw = mne.io.read_raw_edf(str(path), preload=False, verbose="error")
    return [c.name for c in map_channels(raw.ch_names).channels]


def build(size: str, names: list[str]):
    """(braindecode Labram, neurofm Encoder with its weights, Labram's channel indices)."""
    from braindecode.models import Labram
    from braindecode.models.labram import LABRAM_CHANNEL_ORDER

    import neurofm
    from neurofm.models import from_labram

    torch.manual_seed(0)
    dim = SIZES[size]["embed_dim"]
    ref = Labram(n_chans=len(names), n_times=800, n_outputs=2, sfreq=200, qkv_bias=True,
                 use_mean_pooling=True, conv_out_channels=dim // 25, **SIZES[size])  # fmt: skip
    recipe = neurofm.Recipe(window_seconds=4.0, notch=LINE)
    model = from_labram(ref, recipe=recipe, name=f"{size} (LaBraM layout)")
    order = [n.upper() for n in LABRAM_CHANNEL_ORDER]
    # forward(ch_names=...) does this per call; a stream looks it up once, as neurofm does
    idx = torch.tensor([0] + [order.index(n.upper()) + 1 for n in names])
    return ref.eval(), model.eval(), idx


@contextmanager
def torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def signal(n_channels: int, n_times: int, seed: int, chunk_seconds: float = 60.0) -> np.ndarray:
    """Synthetic EEG in volts, generated chunk by chunk (sinusoids continuous across)."""
    from neurofm.synthetic import eeg

    out = np.empty((n_channels, n_times))
    step = int(chunk_seconds * SFREQ_IN)
    for k, i in enumerate(range(0, n_times, step)):
        m = min(step, n_times - i)
        out[:, i : i + m] = eeg(n_channels, m, SFREQ_IN, seed=seed + k, start=i, line=LINE)
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


# ---------------------------------------------------------------------- reference
class MNEReference:
    """Per hop: buffer the raw samples, MNE band-pass + notch over the buffer, resample the
    newest window, Labram forward at batch 1 (what a BCI script built on MNE does)."""

    def __init__(self, ref, idx, recipe, past: np.ndarray):
        self.ref, self.idx, self.recipe = ref, idx, recipe
        self.buf = np.array(past, dtype=np.float64)
        self.win_in = int(round(recipe.window_seconds * SFREQ_IN))

    def preprocess(self, chunk: np.ndarray) -> torch.Tensor:
        import mne

        r = self.recipe
        self.buf = np.concatenate([self.buf[:, chunk.shape[1] :], chunk], axis=1)
        y = mne.filter.filter_data(self.buf, SFREQ_IN, r.l_freq, r.h_freq, n_jobs=1,
                                   verbose="error")  # fmt: skip
        y = mne.filter.notch_filter(y, SFREQ_IN, LINE, n_jobs=1, verbose="error")
        y = mne.filter.resample(y[:, -self.win_in :], up=r.sfreq / SFREQ_IN, n_jobs=1,
                                verbose="error")  # fmt: skip
        return torch.from_numpy((y / r.unit_scale).astype(np.float32))[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.ref.forward_features(x, input_chans=self.idx)


def context_samples(recipe, hop: int, seconds: float | None = None) -> int:
    """Raw samples the reference filters per hop, in whole hops, at least a window:
    ``seconds`` if given, else the length of MNE's FIR for the recipe's band."""
    import mne

    if seconds is None:
        need = len(mne.filter.create_filter(None, SFREQ_IN, recipe.l_freq, recipe.h_freq,
                                            verbose="error"))  # fmt: skip
    else:
        need = int(round(seconds * SFREQ_IN))
    need = max(need, int(round(recipe.window_seconds * SFREQ_IN)))
    return -(-need // hop) * hop


# ---------------------------------------------------------------------- parity
def parity(ref, model, idx, names, recipe) -> dict:
    """Both models on one preprocessed window (the reference's): pooled features agree."""
    from neurofm.channels import eeg_vocabulary
    from neurofm.tokens import Tokens, patchify

    hop = int(round(0.5 * SFREQ_IN))
    n = context_samples(recipe, hop)
    x = MNEReference(ref, idx, recipe, signal(len(names), n, seed=7)).preprocess(
        np.zeros((len(names), 0))
    )
    N, P = recipe.window_patches, recipe.patch_len
    tokens = Tokens(
        x=torch.from_numpy(patchify(x.numpy(), P)),
        space=torch.as_tensor(eeg_vocabulary().ids(names))[None],
        pos=torch.zeros(1, len(names), 3),
        t=torch.arange(N, dtype=torch.float64)[None] * recipe.patch_seconds,
        mask=torch.ones(1, len(names), N, dtype=torch.bool),
    )
    with torch.inference_mode():
        ours = model(tokens).pooled
        theirs = ref.forward_features(x, input_chans=idx)
    diff = (ours - theirs).abs().max().item()
    return {"max_abs_diff": diff, "max_abs_feature": theirs.abs().max().item(),
            "tolerance": PARITY_TOL, "ok": diff <= PARITY_TOL}  # fmt: skip


# ---------------------------------------------------------------------- latency
def latency(ref, model, idx, names, recipe, args, threads: int) -> dict:
    """Per-hop latency of StreamEncoder.push and of the MNE + Labram reference."""
    from neurofm.stream import StreamEncoder

    hop = int(round(args.hop * SFREQ_IN))
    past = context_samples(recipe, hop, args.context)
    hops = args.warmup + args.hops
    x = signal(len(names), past + hops * hop, seed=11)
    enc = StreamEncoder(model, names, SFREQ_IN, hop_seconds=args.hop, line_freq=LINE,
                        threads=threads, pooling="mean")  # fmt: skip
    enc.push(x[:, :past].T)  # the same past for both: the filters' state, the buffer
    mne_ref = MNEReference(ref, idx, recipe, x[:, :past])
    wall, pre, mod, cos = [], [], [], []
    for i in range(hops):
        chunk = x[:, past + i * hop : past + (i + 1) * hop]
        if i == args.warmup:
            enc.clear_latency()
        t0 = time.perf_counter()
        (out,) = enc.push(chunk.T)  # one hop of raw samples -> one embedding
        t1 = time.perf_counter()
        with torch_threads(threads):
            xt = mne_ref.preprocess(chunk)
            t2 = time.perf_counter()
            emb = mne_ref.forward(xt)[0].numpy()
            t3 = time.perf_counter()
        if i >= args.warmup:
            wall.append(t1 - t0)
            pre.append(t2 - t1)
            mod.append(t3 - t2)
            cos.append(float(cosine(out.embedding, emb)))
    lat = enc.latency
    tot = np.add(pre, mod)
    neuro = {"preprocess_p50": lat.preprocess_p50, "preprocess_p99": lat.preprocess_p99,
             "model_p50": lat.model_p50, "model_p99": lat.model_p99,
             "total_p50": lat.total_p50, "total_p99": lat.total_p99,
             "push_wall_p50": pct(wall, 50), "push_wall_p99": pct(wall, 99)}  # fmt: skip
    refr = {"preprocess_p50": pct(pre, 50), "preprocess_p99": pct(pre, 99),
            "model_p50": pct(mod, 50), "model_p99": pct(mod, 99),
            "total_p50": pct(tot, 50), "total_p99": pct(tot, 99)}  # fmt: skip
    return {
        "threads": threads, "hops": len(wall), "hop_seconds": args.hop,
        "context_seconds": past / SFREQ_IN, "neurofm": neuro, "reference": refr,
        # neurofm's side: the whole push() (input checks included), a superset of its total
        "ratio_p50": refr["total_p50"] / neuro["push_wall_p50"],
        "ratio_p99": refr["total_p99"] / neuro["push_wall_p99"],
        "preprocess_share": lat.preprocess_p50 / lat.total_p50,
        "cosine_median": float(np.median(cos)),
    }  # fmt: skip


# ---------------------------------------------------------------------- throughput
def encode_neurofm(model, raw, batch: int) -> tuple[np.ndarray, dict]:
    """neurofm.encode over the recording: (features, seconds in all and in the model)."""
    import neurofm

    model_s = [0.0]

    def started(module, inputs):
        model_s.append(time.perf_counter())

    def ended(module, inputs, output):
        model_s[0] += time.perf_counter() - model_s.pop()

    hooks = [model.register_forward_pre_hook(started), model.register_forward_hook(ended)]
    try:
        t0 = time.perf_counter()
        feats = neurofm.encode(raw, model, pooling="mean", batch_size=batch, device="cpu",
                               progress=False, output="numpy")  # fmt: skip
        seconds = time.perf_counter() - t0
    finally:
        for h in hooks:
            h.remove()
    return feats, {"seconds": seconds, "model_seconds": model_s[0],
                   "windows_per_s": len(feats) / seconds}  # fmt: skip


def encode_reference(ref, idx, recipe, raw, batch: int) -> tuple[np.ndarray, dict]:
    """MNE on the whole Raw, fixed-length epochs, Labram in batches: (features, seconds)."""
    import mne

    work = raw.copy()  # the reference filters in place, as a script would (not timed)
    t0 = time.perf_counter()
    work.filter(recipe.l_freq, recipe.h_freq, n_jobs=1, verbose="error")
    work.notch_filter(LINE, n_jobs=1, verbose="error")
    work.resample(recipe.sfreq, n_jobs=1, verbose="error")
    epochs = mne.make_fixed_length_epochs(work, duration=recipe.window_seconds, preload=True,
                                          verbose="error")  # fmt: skip
    X = (epochs.get_data(copy=False) / recipe.unit_scale).astype(np.float32)
    t1 = time.perf_counter()
    feats = []
    with torch.inference_mode():
        for b in range(0, len(X), batch):
            xb = torch.from_numpy(X[b : b + batch])
            feats.append(ref.forward_features(xb, input_chans=idx).numpy())
    t2 = time.perf_counter()
    return np.concatenate(feats), {"seconds": t2 - t0, "preprocess_seconds": t1 - t0,
                                   "model_seconds": t2 - t1, "windows_per_s": len(X) / (t2 - t0)}  # fmt: skip


def throughput(ref, model, idx, names, recipe, args) -> dict:
    """Windows/s over a recording of ``args.minutes``: neurofm.encode vs MNE + Labram.

    Both sides first encode the first minute untimed (first calls set up kernels). Then
    they alternate ``args.rounds`` times (neurofm first); each keeps its fastest round, so
    a burst of load from elsewhere on the machine hits both alike.
    """
    import mne

    n = int(round(args.minutes * 60 * SFREQ_IN))
    info = mne.create_info(names, SFREQ_IN, "eeg")
    raw = mne.io.RawArray(signal(len(names), n, seed=100), info, verbose="error")
    rounds = {"neurofm": [], "reference": []}
    with torch_threads(args.batch_threads):
        threads = torch.get_num_threads()
        warm = raw.copy().crop(tmax=min(60.0, raw.times[-1]))  # first calls: not timed
        encode_neurofm(model, warm, args.batch)
        encode_reference(ref, idx, recipe, warm, args.batch)
        for _ in range(args.rounds):
            ours, t = encode_neurofm(model, raw, args.batch)
            rounds["neurofm"].append({**t, "loadavg": os.getloadavg()[0]})
            theirs, t = encode_reference(ref, idx, recipe, raw, args.batch)
            rounds["reference"].append({**t, "loadavg": os.getloadavg()[0]})
    best = {side: min(r, key=lambda x: x["seconds"]) for side, r in rounds.items()}
    k = min(len(ours), len(theirs))
    return {
        "minutes": args.minutes, "batch": args.batch, "threads": threads,
        "windows": {"neurofm": len(ours), "reference": len(theirs)},
        **best, "rounds": rounds,
        "ratio": best["neurofm"]["windows_per_s"] / best["reference"]["windows_per_s"],
        "cosine_median": float(np.median(cosine(ours[:k], theirs[:k]))),
    }  # fmt: skip


# ---------------------------------------------------------------------- report
def report(res: dict, args) -> None:
    m = res["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, load {m['loadavg']}; torch {m['torch']} "
          f"({m['torch_threads']} threads by default), mne {m['mne']}, braindecode "
          f"{m['braindecode']}, neurofm {m['neurofm']}")  # fmt: skip
    p = res["parity"]
    print(f"model: {res['model']}, random weights (seed 0) shared by both; same window "
          f"-> pooled features max |diff| {p['max_abs_diff']:.1e} (of {p['max_abs_feature']:.2g};"
          f" tolerance {p['tolerance']:.0e}): {'ok' if p['ok'] else 'FAILED'}")  # fmt: skip
    if res["latency"]:
        r0 = res["latency"][0]
        print(f"\n1. latency per hop, 64 ch x 4 s at batch 1, CPU: {SFREQ_IN:g} Hz input, "
              f"hop {r0['hop_seconds']:g} s, {r0['hops']} hops timed; reference filters the "
              f"last {r0['context_seconds']:g} s each hop (ms, p50/p99)")  # fmt: skip
        head = (f"{'threads':>7} {'side':<10} {'preprocess':>15} {'model':>15} {'total':>15}"
                f" {'push() wall':>15}")  # fmt: skip
        print(head)
        print("-" * len(head))
        for r in res["latency"]:
            for side in ("neurofm", "reference"):
                s = r[side]
                wall = (f"{s['push_wall_p50']:>7.1f}/{s['push_wall_p99']:<7.1f}"
                        if side == "neurofm" else "")  # fmt: skip
                print(f"{r['threads']:>7} {side:<10} "
                      f"{s['preprocess_p50']:>7.2f}/{s['preprocess_p99']:<7.2f}"
                      f"{s['model_p50']:>7.1f}/{s['model_p99']:<7.1f}"
                      f"{s['total_p50']:>7.1f}/{s['total_p99']:<7.1f} {wall}")  # fmt: skip
            print(f"{r['threads']:>7} ratio: reference / neurofm push() = "
                  f"{r['ratio_p50']:.2f}x at p50, {r['ratio_p99']:.2f}x at p99 (goal >= 2x); "
                  f"neurofm preprocessing {r['preprocess_share']:.1%} of its total (goal < 20%); "
                  f"cosine of the two embeddings per hop, median {r['cosine_median']:.3f}")  # fmt: skip
    t = res["throughput"]
    if t:
        print(f"\n2. throughput, {t['minutes']:g} min of 64 ch at {SFREQ_IN:g} Hz -> "
              f"{t['windows']['neurofm']} windows of 4 s, batch {t['batch']}, "
              f"{t['threads']} torch threads, best of {len(t['rounds']['neurofm'])} "
              "alternating round(s)")  # fmt: skip
        head = f"{'side':<10} {'windows/s':>10} {'seconds':>9} {'model s':>9} {'other s':>9}"
        print(head)
        print("-" * len(head))
        for side in ("neurofm", "reference"):
            s = t[side]
            print(f"{side:<10} {s['windows_per_s']:>10.1f} {s['seconds']:>9.2f} "
                  f"{s['model_seconds']:>9.2f} {s['seconds'] - s['model_seconds']:>9.2f}")  # fmt: skip
        print(f"ratio neurofm / reference: {t['ratio']:.2f}x windows/s; cosine of the two "
              f"embeddings per window, median {t['cosine_median']:.3f}")  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="eeg-base", choices=sorted(SIZES))
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="latency: torch threads")
    p.add_argument("--hops", type=int, default=200, help="latency: hops timed")
    p.add_argument("--warmup", type=int, default=5, help="latency: hops dropped first")
    p.add_argument("--hop", type=float, default=0.5, help="seconds")
    p.add_argument("--context", type=float, default=None,
                   help="latency: seconds the reference filters per hop (default: MNE's FIR "
                   "length, 33 s; shorter makes MNE warn of distortion)")  # fmt: skip
    p.add_argument("--minutes", type=float, default=60.0, help="throughput: recording length")
    p.add_argument("--batch", type=int, default=64, help="throughput: windows per forward")
    p.add_argument("--batch-threads", type=int, default=None,
                   help="throughput: torch threads (default: torch's)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=1,
                   help="throughput: alternate the two sides this often, keep each one's best")  # fmt: skip
    p.add_argument("--skip", nargs="*", default=[], choices=["latency", "throughput"])
    p.add_argument("--quick", action="store_true", help="eeg-tiny, 5 hops, 1 minute: a check")
    p.add_argument("--json", help="write the results here (e.g. out/bench_encode.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.hops, args.warmup, args.minutes = "eeg-tiny", 5, 1, 1.0

    names = channel_names()
    ref, model, idx = build(args.size, names)
    recipe = model.recipe
    res = {"machine": machine(), "model": f"{args.size} geometry (LaBraM layout)",
           "recipe": json.loads(recipe.model_dump_json()), "args": vars(args)}  # fmt: skip
    res["parity"] = parity(ref, model, idx, names, recipe)
    if not res["parity"]["ok"]:
        raise SystemExit(f"the two models disagree: {res['parity']}")
    res["latency"] = [] if "latency" in args.skip else [
        latency(ref, model, idx, names, recipe, args, n) for n in args.threads]  # fmt: skip
    res["throughput"] = None if "throughput" in args.skip else throughput(
        ref, model, idx, names, recipe, args)  # fmt: skip
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report(res, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
