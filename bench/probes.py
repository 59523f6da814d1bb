"""Pretraining helps? Linear probes of frozen features: checkpoint vs random init vs band power.

    python bench/probes.py --model checkpoints/eeg-base/          # a checkpoint folder
    python bench/probes.py --model eeg-base.sample --seeds 0 1 2  # or a weights name

For each probe (labels pretraining never saw), three feature sources on the same windows
(the checkpoint's recipe, tokenized once per probe) and the same group-wise folds:

- **pretrained**: the checkpoint's frozen features (mean of the final token features over
  real tokens), a standardised logistic regression on top;
- **random init**: the same architecture and recipe at a random initialisation
  (``torch.manual_seed(seed)``), one per seed;
- **band power + LR**: log delta/theta/alpha/beta/gamma power per channel, same read-out.

Probes:

- ``eegmat``: EEGMAT rest vs mental arithmetic, 20 subjects, leave-subjects-out
  (``--folds-eegmat`` folds of whole subjects, reshuffled by seed);
- ``eegmmidb_eyes``: eegmmidb subject 1, eyes open (run 1) vs eyes closed (run 2); one
  subject, so the groups are contiguous time blocks (``--blocks`` per run): it measures
  within-subject separability, not generalisation across people.

Each seed sets the split and the random initialisation. On a CPU shared with other jobs,
``--threads 1`` avoids threads waiting on each other (several times faster there). Prints balanced accuracy mean ± sd
over seeds (chance 0.5) and AUROC; ``--out`` gets everything, per seed, as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

ARMS = ("pretrained", "random init", "band power + LR")
PROBES = ("eegmat", "eegmmidb_eyes")


def run(args) -> dict:
    import neurofm
    from neurofm.errors import FileFormatWarning
    from neurofm.eval import load_eegmat, load_eegmmidb_eyes, random_init_features, run_probe

    # eegmmidb's EDF annotations run past the data: said once per file, harmless here
    warnings.filterwarnings("ignore", category=FileFormatWarning)
    begin = time.perf_counter()
    model = neurofm.load_model(args.model, device=args.device)
    recipe = model.recipe
    report = {
        "model": str(args.model),
        "architecture": model.config.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": recipe.model_dump(mode="json"),
        "seeds": args.seeds,
        "pooling": args.pooling,
        "device": str(args.device),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "neurofm": neurofm.__version__,
        "probes": {},
    }
    sources = {
        "pretrained": model,
        "random init": random_init_features(model, pooling=args.pooling),
        "band power + LR": "bandpower",
    }
    for probe in args.probes:
        if probe == "eegmat":
            subjects = None if args.subjects is None else range(args.subjects)
            data = load_eegmat(args.data, recipe, subjects=subjects)
            n_splits = args.folds_eegmat
        else:
            data = load_eegmmidb_eyes(args.data, recipe, n_blocks=args.blocks)
            n_splits = args.folds_eegmmidb
        entry = {"data": data.describe(), "n_splits": n_splits, "arms": {}}
        for arm, source in sources.items():
            start = time.perf_counter()
            result = run_probe(data, source, seeds=args.seeds, n_splits=n_splits,
                               pooling=args.pooling)  # fmt: skip
            entry["arms"][arm] = {**result.to_dict(),
                                  "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
        report["probes"][probe] = entry
    report["seconds"] = round(time.perf_counter() - begin, 2)
    return report


def table(report: dict) -> str:
    """The report as a fixed-width table: one row per probe."""
    head = (f"{'probe':<15}{'windows':>9}{'groups':>13}{'chance':>8}"
            + "".join(f"{a:>22}" for a in ARMS) + f"{'seconds':>9}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for name, entry in report["probes"].items():
        d = entry["data"]
        groups = f"{d['groups']} {'subj' if d['group_kind'] == 'subject' else 'blocks'}"
        cells = []
        for arm in ARMS:
            ba = entry["arms"][arm]["balanced_accuracy"]
            cells.append(f"{ba['mean']:.3f} ± {ba['sd']:.3f}")
        chance = entry["arms"][ARMS[0]]["chance"]
        seconds = d["seconds"] + sum(a["seconds"] for a in entry["arms"].values())
        lines.append(f"{name:<15}{d['windows']:>9}{groups:>13}{chance:>8.2f}"
                     + "".join(f"{c:>22}" for c in cells) + f"{seconds:>9.1f}")  # fmt: skip
        aurocs = [entry["arms"][a]["auroc"] for a in ARMS]
        lines.append(f"{'  AUROC':<45}"
                     + "".join(f"{a['mean']:.3f} ± {a['sd']:.3f}".rjust(22) for a in aurocs))  # fmt: skip
    lines.append("")
    for name, entry in report["probes"].items():
        d = entry["data"]
        per_class = ", ".join(f"{k} {v}" for k, v in d["windows_per_class"].items())
        lines.append(f"{name}: {d['subjects']} subject(s), {per_class} windows, "
                     f"{entry['n_splits']} folds; {d['note']}")  # fmt: skip
    lines.append(
        f"balanced accuracy (AUROC below), mean ± sd over seeds {report['seeds']}; "
        f"{report['architecture']} ({report['parameters'] / 1e6:.2f}M parameters) from "
        f"{report['model']}; {report['seconds']:.1f} s in all"
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True,
                   help="a checkpoint folder or a weights name (neurofm.load_model)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--data", type=Path, default=Path("../shared/data/eeg"),
                   help="the folder holding eegmat/ and eegmmidb/")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("out/probes.json"))
    p.add_argument("--probes", nargs="+", choices=PROBES, default=list(PROBES))
    p.add_argument("--folds-eegmat", type=int, default=5, help="folds of whole subjects")
    p.add_argument("--folds-eegmmidb", type=int, default=6, help="folds of whole time blocks")
    p.add_argument("--blocks", type=int, default=6, help="eegmmidb time blocks per run")
    p.add_argument("--subjects", type=int, help="EEGMAT: the first N subjects only (quick runs)")
    p.add_argument("--pooling", choices=("mean", "pooled"), default="mean")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's); 1 is faster on a busy machine")  # fmt: skip
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args)
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
