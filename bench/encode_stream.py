"""StreamEncoder latency per hop: p50/p99, preprocessing and model apart, by torch threads.

    python bench/encode_stream.py              # eeg-tiny.sample and eeg-base, 1 and 2 threads
    python bench/encode_stream.py --smoke      # seconds: checks the script itself

The bundled recording (64 channels at 160 Hz, resampled to 200 Hz) is pushed one hop at a
time (0.5 s), as an acquisition loop would, into 4 s windows; every hop is timed:
``preprocess`` is the causal chain for the hop's samples plus patching into tokens,
``model`` the encoder's forward pass at batch 1. ``eeg-base`` has random weights
(``create_model``: the timing does not depend on them). Threads are set per forward pass
(``StreamEncoder(threads=...)``); on a shared machine p99 at more threads than free cores
is where the time goes.
"""

from __future__ import annotations

import argparse
import time
import warnings
from importlib.resources import files

warnings.filterwarnings("ignore")


def load_recording(seconds: float):
    import mne

    path = files("neurofm") / "sample_data" / "S001R03.edf"
    raw = mne.io.read_raw_edf(str(path), preload=True, verbose="error")
    stop = min(raw.n_times, int(seconds * raw.info["sfreq"]))
    return raw.ch_names, raw.info["sfreq"], raw.get_data(stop=stop)


def run(model, names, sfreq, data, hop: float, window: float, threads: int, warmup: int):
    """The stream's latency over one pass of ``data``, the first ``warmup`` hops dropped."""
    from neurofm.stream import StreamEncoder

    enc = StreamEncoder(model, names, sfreq, hop_seconds=hop, window_seconds=window,
                        line_freq=60, threads=threads)  # fmt: skip
    step = int(round(hop * sfreq))
    hops = 0
    start = time.perf_counter()
    for i in range(0, data.shape[1], step):
        hops += len(enc.push(data[:, i : i + step].T))
        if hops == warmup and warmup:
            enc.clear_latency()
    return enc.latency, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["eeg-tiny.sample", "eeg-base"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seconds", type=float, default=60.0, help="of the recording")
    parser.add_argument("--hop", type=float, default=0.5)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--smoke", action="store_true", help="tiny run: checks the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.threads, args.seconds = ["eeg-tiny.sample"], [1], 6.0

    import torch

    import neurofm
    from neurofm.models import create_model

    names, sfreq, data = load_recording(args.seconds)
    print(f"{len(names)} channels at {sfreq:g} Hz, {data.shape[1] / sfreq:g} s; windows of "
          f"{args.window:g} s every {args.hop:g} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads by default")  # fmt: skip
    head = (f"{'model':<16} {'threads':>7} {'hops':>5} {'preprocess p50/p99':>19} "
            f"{'model p50/p99':>15} {'total p50/p99':>15}  (ms per hop)")  # fmt: skip
    print(head)
    print("-" * len(head))
    for name in args.models:
        model = neurofm.load_model(name) if "." in name else create_model(name)
        for threads in args.threads:
            lat, _ = run(model, names, sfreq, data, args.hop, args.window, threads, warmup=2)
            print(f"{name:<16} {threads:>7} {lat.hops:>5} "
                  f"{lat.preprocess_p50:>8.2f}/{lat.preprocess_p99:<10.2f}"
                  f"{lat.model_p50:>7.1f}/{lat.model_p99:<7.1f} "
                  f"{lat.total_p50:>7.1f}/{lat.total_p99:<7.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
