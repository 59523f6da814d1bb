"""Command line: ``neurofm demo | info FILE | models | preprocess CONFIG``.

Bad input (a ``NeurofmError``: a config that does not validate, an unreadable file) is
one clean ``error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path


def sample_path() -> Path:
    """The bundled sample: PhysioNet eegmmidb S001R03 (64 ch, 160 Hz, 125 s, ODC-By)."""
    return Path(str(resources.files("neurofm").joinpath("sample_data/S001R03.edf")))


def plot_tokens(raw, tokens, path: Path, title: str, sfreq: float) -> Path:
    """Two panels: the first window's traces, and RMS per token over the whole grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = tokens.x.numpy()  # (B, S, N, P)
    rms = np.sqrt((x**2).mean(-1))  # (B, S, N)
    grid = np.concatenate(list(rms), axis=1)  # S x (B*N): every patch of the recording
    names = tokens.names[0]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [1, 1.4]})
    shown = list(range(0, len(names), max(1, len(names) // 12)))
    window = x[0].reshape(x.shape[1], -1)
    t = np.arange(window.shape[1]) / sfreq
    for k, s in enumerate(shown):
        ax0.plot(t, window[s] / 4 - 3 * k, lw=0.6, color="k")
    ax0.set_yticks([-3 * k for k in range(len(shown))], [names[s] for s in shown])
    ax0.set_xlabel("seconds (window 0, after the recipe)")
    ax0.set_title("signal, model units (100 uV)")
    im = ax1.imshow(grid, aspect="auto", cmap="magma", interpolation="nearest")
    ax1.set_yticks(range(0, len(names), 4), names[::4], fontsize=7)
    ax1.set_xlabel(
        f"patch ({tokens.shape[0]} windows x {tokens.shape[2]} patches of {tokens.shape[3]} samples)"
    )
    ax1.set_title("token grid: RMS per channel patch")
    fig.colorbar(im, ax=ax1, label="RMS (model units)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _encode(tokens, name: str = "eeg-base") -> None:
    """Run the encoder over the token grid (random weights: neurofm ships none)."""
    import time

    import torch

    from neurofm.models import create_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(tokens)
    seconds = time.perf_counter() - start
    print(f"encoder {name} ({model.num_params() / 1e6:.1f}M parameters, random init; load "
          f"weights with neurofm.load_model or neurofm.models.from_labram): "
          f"tokens {tuple(out.tokens.shape)}, pooled {tuple(out.pooled.shape)} "
          f"in {seconds:.2f} s ({len(tokens) / seconds:.0f} windows/s)")  # fmt: skip


def _preprocess(args) -> int:
    import json

    from neurofm.config import load_config
    from neurofm.data import CorpusConfig, preprocess_corpus

    overrides = list(args.set)
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    if args.overwrite:
        overrides.append("overwrite=true")
    config = load_config(args.config, CorpusConfig, overrides)
    stats = preprocess_corpus(config, progress=sys.stderr.isatty())
    print(f"{config.dataset}: {stats['recordings']} recordings, {stats['windows']} windows "
          f"({stats['hours']:g} h), {stats['subjects']} subjects, "
          f"{len(stats['channels_seen'])} channels, {stats['failures']} failures -> {config.out}")  # fmt: skip
    dropped = stats["dropped"]
    if dropped["recordings"]:
        print(f"note: {dropped['seconds']:g} s at the ends of {dropped['recordings']} recordings "
              f"fill no whole {config.recipe.window_seconds:g} s window and are not in the "
              "shards (per recording: stats.json 'dropped')")  # fmt: skip
    print(json.dumps({"window_labels": stats["window_labels"]}))
    return 0 if stats["recordings"] else 2


def _models() -> int:
    import torch

    from neurofm.models import MODELS, create_model

    print(f"{'name':<12} {'modality':<8} {'dim':>4} {'depth':>5} {'heads':>5} {'params':>8}")
    for name, cfg in MODELS.items():
        with torch.device("meta"):
            n = create_model(name).num_params()
        print(f"{name:<12} {cfg['modality']:<8} {cfg['dim']:>4} {cfg['depth']:>5} "
              f"{cfg['heads']:>5} {n / 1e6:>7.1f}M")  # fmt: skip
    return 0


def _describe(path, out: Path | None, recipe=None, encode: bool = False) -> int:
    import neurofm
    from neurofm.preprocess import Stream

    recipe = recipe or neurofm.Recipe()
    raw, report = neurofm.read_eeg(path, return_report=True)
    print(f"recording: {Path(path).name}: {len(raw.ch_names)} channels kept, "
          f"{raw.info['sfreq']:g} Hz, {raw.times[-1]:.1f} s")  # fmt: skip
    print(report)
    print(f"recipe: {recipe.model_dump_json()}")
    print(Stream(raw, recipe))
    tokens = neurofm.tokenize(raw, recipe, progress=sys.stderr.isatty())
    B, S, N, P = tokens.shape
    print(f"{tokens}\n  x {tuple(tokens.x.shape)}  space {tuple(tokens.space.shape)}  "
          f"pos {tuple(tokens.pos.shape)}  t {tuple(tokens.t.shape)}  mask {tuple(tokens.mask.shape)}")  # fmt: skip
    print(f"  first ids {tokens.space[0, :6].tolist()} for {list(tokens.names[0][:6])}")
    w = min(1, B - 1)  # a recording may give one window
    print(f"  patch starts (s) of window {w}: {tokens.t[w].tolist()}")
    print(f"  amplitude: median |x| {tokens.x.abs().median():.3f} model units")
    if encode:
        _encode(tokens)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        png = plot_tokens(
            raw,
            tokens,
            out / f"{Path(path).stem}_tokens.png",
            f"{Path(path).name}: {B}x{S}x{N}x{P}",
            recipe.sfreq,
        )
        print(f"plot: {png}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="neurofm", description="EEG and fMRI foundation models")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="read the bundled sample recording and show its token grid")
    demo.add_argument("--out", type=Path, default=Path("out"), help="folder for the plot")
    info = sub.add_parser("info", help="channel report and token grid of any recording")
    info.add_argument("path")
    info.add_argument("--out", type=Path, default=None, help="also save a plot here")
    info.add_argument("--encode", action="store_true", help="also run the eeg-base encoder")
    sub.add_parser("models", help="the registered model sizes")
    prep = sub.add_parser("preprocess", help="shard a corpus: reader + Recipe + windows (YAML)")
    prep.add_argument("config", type=Path, help="e.g. configs/preprocess/chbmit.yaml")
    prep.add_argument("--workers", type=int, default=None, help="override the config's workers")
    prep.add_argument("--overwrite", action="store_true",
                      help="redo shards made with another recipe or reader option")  # fmt: skip
    prep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config value, e.g. --set recipe.notch=50 (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from neurofm.errors import NeurofmError

    try:
        if args.command == "demo":
            return _describe(sample_path(), args.out, encode=True)
        if args.command == "models":
            return _models()
        if args.command == "preprocess":
            return _preprocess(args)
        return _describe(args.path, args.out, encode=args.encode)
    except NeurofmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
