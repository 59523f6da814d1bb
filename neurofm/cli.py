"""Command line: ``neurofm demo | info FILE | models | preprocess CONFIG.yaml | pretrain CONFIG.yaml``.

Every verb is a function registered with :func:`verb` beside the config model it takes;
one path parses, validates and runs them all::

    neurofm VERB [CONFIG.yaml] [ARG ...] [--flag VALUE ...] [key.sub=value ...]

A verb that takes a config file (``preprocess``, ``pretrain``, and ``finetune``/... as
they come) reads it with :func:`~neurofm.config.load_config`; the others build their
options from the arguments with the same function. ``key.sub=value`` overrides (also as
``--set key.sub=value``) and flags apply on top, so every problem, in the file or on the
command line, is one ``error: ...`` line with the fix, and exit status 2, never a
traceback or a pydantic dump.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field

from .config import StrictConfig, load_config
from .data import CorpusConfig
from .preprocess import Recipe
from .train.config import PretrainConfig
from .viz import plot_tokens


@dataclass(frozen=True)
class Verb:
    """A command: its function, the config model it takes, and how the arguments map."""

    run: Callable[[StrictConfig], int]
    model: type[StrictConfig]
    help: str
    config: bool  # the first argument is a YAML file
    args: tuple[str, ...]  # positional arguments: the model's fields of these names
    flags: tuple[str, ...]  # --name options: the model's fields of these names


VERBS: dict[str, Verb] = {}


def verb(name: str, model: type[StrictConfig], help: str, *, config: bool = False,
         args: tuple[str, ...] = (), flags: tuple[str, ...] = ()):  # fmt: skip
    """Register ``run(options) -> exit status`` as ``neurofm NAME``."""

    def register(run):
        VERBS[name] = Verb(run, model, help, config, args, flags)
        return run

    return register


def sample_path() -> Path:
    """The bundled sample: PhysioNet eegmmidb S001R03 (64 ch, 160 Hz, 125 s, ODC-By)."""
    return Path(str(resources.files("neurofm").joinpath("sample_data/S001R03.edf")))


def _encode(tokens, weights: str = "eeg-tiny.sample") -> None:
    """Encode the token grid with the small pretrained checkpoint shipped in the package."""
    import time

    import torch

    from neurofm.models import load_model

    model = load_model(weights).eval()  # shipped: offline, no download
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(tokens)
    seconds = time.perf_counter() - start
    print(f"encoder {weights} ({model.config.name}, {model.num_params() / 1e6:.2f}M parameters, "
          f"pretrained; model card: neurofm.models.WEIGHTS[{weights!r}].card): tokens "
          f"{tuple(out.tokens.shape)}, pooled {tuple(out.pooled.shape)} in {seconds:.2f} s "
          f"({len(tokens) / seconds:.0f} windows/s)")  # fmt: skip


@verb("preprocess", CorpusConfig, "shard a corpus: reader + Recipe + windows (YAML)",
      config=True, flags=("workers", "overwrite", "part", "merge"))  # fmt: skip
def _preprocess(config: CorpusConfig) -> int:
    import json
    import shlex

    from neurofm.data import preprocess_corpus
    from neurofm.data.shards import part_command

    # this run's command line, so that a merge can name the command of a part to rerun
    argv = sys.argv[1:]
    command = "neurofm " + shlex.join(argv) if "preprocess" in argv[:2] else None
    stats = preprocess_corpus(config, progress=sys.stderr.isatty(), command=command)
    if config.part:
        print(f"{config.dataset} part {config.part}: {stats['recordings']} of "
              f"{len(stats['ids'])} recordings sharded ({stats['written']} now, "
              f"{stats['done_before']} before), {stats['windows']} windows "
              f"({stats['hours']:g} h), {len(stats['failures'])} failures in "
              f"{stats['seconds']:g} s -> {config.out}")  # fmt: skip
        print(f"when every part has finished: {part_command(command, None)}")
        return 0
    units = "parcels" if config.recipe.modality == "fmri" else "channels"
    print(f"{config.dataset}: {stats['recordings']} recordings, {stats['windows']} windows "
          f"({stats['hours']:g} h), {stats['subjects']} subjects, "
          f"{len(stats['channels_seen'])} {units}, {stats['failures']} failures -> {config.out}")  # fmt: skip
    dropped = stats["dropped"]
    if dropped["recordings"]:
        print(f"note: {dropped['seconds']:g} s at the ends of {dropped['recordings']} recordings "
              f"fill no whole {config.recipe.window_seconds:g} s window and are not in the "
              "shards (per recording: stats.json 'dropped')")  # fmt: skip
    print(json.dumps({"window_labels": stats["window_labels"]}))
    return 0 if stats["recordings"] else 2


@verb("pretrain", PretrainConfig, "pretrain a tokenizer or an encoder; torchrun for many "
      "GPUs (YAML)", config=True)  # fmt: skip
def _pretrain(config: PretrainConfig) -> int:
    from neurofm.train import pretrain

    summary = pretrain(config)
    last = summary["last"]
    figures = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "accuracy", "majority", "usage")
                        if k in last)  # fmt: skip
    print(f"{summary['objective']} {summary['model']}: {summary['steps']} steps, "
          f"{summary['windows']} windows in {summary['seconds']:.0f} s ({figures})")  # fmt: skip
    print(f"checkpoint: {summary['checkpoint']}  (neurofm.load_model(path))")
    print(f"metrics: {summary['out']}/metrics.jsonl, curves: {summary['out']}/curves.png")
    return 0


class ModelsOptions(StrictConfig):
    modality: Literal["eeg", "fmri"] | None = Field(None, description="list only these")


@verb("models", ModelsOptions, "the registered architectures and weights", flags=("modality",))
def _models(options: ModelsOptions) -> int:
    import torch

    from neurofm.models import WEIGHTS, create_model, list_models, model_config, weights_folder

    print("architectures (create_model(name): random weights)")
    print(f"  {'name':<15} {'modality':<8} {'dim':>4} {'depth':>5} {'heads':>5} {'params':>8}")
    for name in list_models():
        cfg = model_config(name)
        if options.modality not in (None, cfg.modality):
            continue
        with torch.device("meta"):
            n = create_model(name).num_params()
        print(f"  {name:<15} {cfg.modality:<8} {cfg.dim:>4} {cfg.depth:>5} "
              f"{cfg.heads:>5} {n / 1e6:>7.1f}M")  # fmt: skip
    print("weights (load_model(name))")
    print(f"  {'name':<22} {'model':<15} {'status':<12} source")
    for name, w in sorted(WEIGHTS.items()):
        if options.modality not in (None, model_config(w.model).modality):
            continue
        folder = weights_folder(name)
        status = "shipped" if w.shipped else "cached" if (folder / "config.json").exists() else (
            "downloadable" if w.source.startswith("hf://") else "import once"
        )  # fmt: skip
        print(f"  {name:<22} {w.model:<15} {status:<12} {w.source}")
    return 0


class InfoOptions(StrictConfig):
    path: str = Field(description="a recording in any format read_eeg reads")
    out: str | None = Field(None, description="also save a plot in this folder")
    encode: bool = Field(False, description="also run the eeg-base encoder")
    recipe: Recipe = Field(default_factory=Recipe, description="e.g. recipe.notch=50")


class DemoOptions(StrictConfig):
    out: str = Field("out", description="folder for the plot")
    recipe: Recipe = Field(default_factory=Recipe, description="e.g. recipe.notch=50")


@verb("demo", DemoOptions, "read the bundled sample recording and show its token grid",
      flags=("out",))  # fmt: skip
def _demo(options: DemoOptions) -> int:
    return _describe(InfoOptions(path=str(sample_path()), out=options.out, encode=True,
                                 recipe=options.recipe))  # fmt: skip


@verb("info", InfoOptions, "channel report and token grid of any recording", args=("path",),
      flags=("out", "encode"))  # fmt: skip
def _describe(options: InfoOptions) -> int:
    import neurofm
    from neurofm.preprocess import Stream

    path, recipe = options.path, options.recipe
    out = None if options.out is None else Path(options.out)
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
    if options.encode:
        _encode(tokens)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        png = plot_tokens(
            tokens,
            out / f"{Path(path).stem}_tokens.png",
            f"{Path(path).name}: {B}x{S}x{N}x{P}",
            recipe.sfreq,
        )
        print(f"plot: {png}")
    return 0


class EncodeOptions(StrictConfig):
    path: str = Field(description="a recording (any format read_eeg reads) or an fMRI run")
    model: str = Field("eeg-tiny.sample", description="weights name or checkpoint folder")
    pooling: Literal["mean", "cls", "channel", "region", "none"] = Field(
        "mean", description="mean | cls | channel | region | none"
    )
    layer: int | None = Field(None, description="block to read (negative: from the end)")
    out: str = Field("features.nc", description="netCDF (.nc) or .npy file to write")
    event_id: list[str] | None = Field(None, description="annotations to window, e.g. [T1,T2]")
    tmin: float | None = Field(None, description="event-locked: window start (s)")
    tmax: float | None = Field(None, description="event-locked: window end (s)")
    window_seconds: float | None = Field(None, description="default: the model's recipe")
    stride_seconds: float | None = Field(None, description="default: the window")
    device: str = Field("auto", description="auto | cpu | cuda | mps")
    batch_size: int = Field(32, gt=0)
    random_init: bool = Field(False, description="random weights (a baseline), by name")


@verb("encode", EncodeOptions, "embeddings of a recording with a pretrained model "
      "(netCDF or .npy)", args=("path",), flags=("model", "pooling", "layer", "out"))  # fmt: skip
def _encode_verb(options: EncodeOptions) -> int:
    from neurofm.encode import encode, save_features

    o = options
    features = encode(o.path, o.model, pooling=o.pooling, layer=o.layer, event_id=o.event_id,
                      tmin=o.tmin, tmax=o.tmax, window_seconds=o.window_seconds,
                      stride_seconds=o.stride_seconds, device=o.device,
                      batch_size=o.batch_size, random_init=o.random_init,
                      progress=sys.stderr.isatty())  # fmt: skip
    path = save_features(features, o.out)
    print(features.attrs["report"])
    print(f"features {dict(features.sizes)} -> {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurofm", description="EEG and fMRI foundation models")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, v in VERBS.items():
        p = sub.add_parser(name, help=v.help)
        if v.config:
            p.add_argument("config", type=Path, help=f"a YAML file (examples in configs/{name}/)")
        for arg in v.args:
            p.add_argument(arg, help=v.model.model_fields[arg].description)
        for flag in v.flags:
            field = v.model.model_fields[flag]
            switch = field.annotation is bool
            kind = {"action": "store_true"} if switch else {"metavar": flag.upper()}
            p.add_argument(f"--{flag}", dest=f"flag_{flag}", default=None,
                           help=field.description, **kind)  # fmt: skip
        p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                       help="set a config value, e.g. recipe.notch=50")  # fmt: skip
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="the same, as an option (repeatable)")  # fmt: skip
    return parser


def _options(v: Verb, args: argparse.Namespace) -> StrictConfig:
    """The verb's validated config: the file (or the arguments), then flags and overrides."""
    given = {f: getattr(args, f"flag_{f}") for f in v.flags}
    pairs = [(f, value) for f, value in given.items() if value is not None]
    overrides = [*pairs, *args.set, *args.overrides]
    if v.config:
        return load_config(args.config, v.model, overrides)
    data = {arg: getattr(args, arg) for arg in v.args}
    return load_config(data, v.model, overrides, name=f"neurofm {args.command}")


def main(argv=None) -> int:
    parser = _parser()
    # KEY=VALUE overrides may follow flags (`preprocess c.yaml --overwrite recipe.notch=50`);
    # argparse leaves those for a `nargs="*"` positional after an option, so collect them
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if "=" not in item or item.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from neurofm.errors import NeurofmError

    v = VERBS[args.command]
    try:
        return v.run(_options(v, args))
    except NeurofmError as err:  # one line per problem, each saying what to do
        for line in filter(None, map(str.strip, str(err).splitlines())):
            print(f"error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
