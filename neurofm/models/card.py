"""Model cards: what a checkpoint is, what it saw, and what it is (not) good for.

A card is ``README.md`` in the checkpoint folder (as on the Hugging Face Hub): YAML front
matter a program can read, then prose a person can. :func:`write_card` builds it from
what the folder and its run know: ``config.json`` (architecture, sizes, recipe, the
training step and data counts), the run's ``summary.json`` and ``metrics.jsonl``, the
corpus's ``stats.json`` and ``index.csv`` (recordings, hours, datasets), and evaluation
results given by the caller. Nothing is guessed: a figure that is not known is left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

CARD = "README.md"
USE = ("Research use only. Not a medical device: not validated for diagnosis, monitoring "
       "or any clinical decision.")  # fmt: skip


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).strip()


def _corpus(corpus: Path | None) -> dict:
    """Counts of a corpus made by ``neurofm preprocess`` (its stats.json and index.csv)."""
    if corpus is None or not (corpus / "stats.json").exists():
        return {}
    import pandas as pd

    stats = json.loads((corpus / "stats.json").read_text())
    index = pd.read_csv(corpus / "index.csv")
    return {
        "recordings": stats["recordings"], "windows": stats["windows"],
        "hours": stats["hours"], "subjects": stats["subjects"],
        "datasets": {str(k): int(v) for k, v in index.dataset.value_counts().items()},
        "channels_seen": len(stats["channels_seen"]), "files": sorted(index.id.astype(str)),
    }  # fmt: skip


def write_card(folder, *, run=None, corpus=None, name: str | None = None, summary: str = "",
               sources: str = "", licence: str = "", evaluation: str = "",
               limits: str = "") -> Path:  # fmt: skip
    """Write ``folder/README.md`` for the checkpoint in ``folder``; returns its path.

    Parameters
    ----------
    folder : the checkpoint folder (``config.json`` + ``model.safetensors``).
    run : the training run's folder (``summary.json``, ``metrics.jsonl``), if any.
    corpus : the corpus folder it was trained on (``stats.json``, ``index.csv``), if any.
    name : the weights name (default: the folder's name).
    summary, sources, licence, evaluation, limits : Markdown paragraphs written as given.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    model, recipe, training = config["model"], config["recipe"], config.get("training", {})
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    data = _corpus(Path(corpus)) if corpus else {}
    run_summary, last = {}, {}
    if run and (Path(run) / "summary.json").exists():
        run_summary = json.loads((Path(run) / "summary.json").read_text())
        last = run_summary.get("last", {})
    front = {
        "name": name or folder.name, "architecture": config["architecture"],
        "model": model.get("name"), "modality": model.get("modality", "eeg"),
        "parameters": n_params, "format": f"neurofm {config['format_version']} (safetensors + JSON)",
        "objective": training.get("objective"), "steps": training.get("step"),
        "windows_seen": training.get("windows"), "tokens_seen": training.get("tokens"),
        "training_seconds": run_summary.get("seconds"),
        "recipe": {k: recipe.get(k) for k in ("sfreq", "l_freq", "h_freq", "notch", "unit_scale",
                                              "patch_seconds", "window_seconds", "t_r", "patch_trs")
                   if k in recipe},
        "data": {k: v for k, v in data.items() if k != "files"},
        "final_metrics": {k: round(v, 4) for k, v in last.items()
                          if k in ("loss", "accuracy", "majority", "usage", "perplexity",
                                   "amplitude", "phase")},
        "intended_use": USE,
    }  # fmt: skip
    front = {k: v for k, v in front.items() if v not in (None, {}, "")}
    lines = ["---", _yaml(front), "---", "", f"# {front['name']}", ""]
    if summary:
        lines += [summary, ""]
    if data:
        lines += ["## Training data", "",
                  f"{data['recordings']} recordings ({data['hours']} h in {data['windows']} "
                  f"windows of {recipe.get('window_seconds', '?')} s, {data['subjects']} "
                  f"subjects, {data['channels_seen']} distinct channels): "
                  + ", ".join(f"{n} from {d}" for d, n in data["datasets"].items()) + ".", "",
                  "<details><summary>Recordings</summary>", "",
                  ", ".join(data["files"]), "", "</details>", ""]  # fmt: skip
    if sources:
        lines += [sources, ""]
    if run_summary:
        lines += ["## Training", "",
                  f"{front.get('objective')} for {front.get('steps')} steps "
                  f"({front.get('windows_seen')} windows, {front.get('tokens_seen')} tokens) in "
                  f"{run_summary.get('seconds')} s of steps; final figures: "
                  + ", ".join(f"{k} {v}" for k, v in front.get("final_metrics", {}).items())
                  + ". Curves: `curves.png`.", ""]  # fmt: skip
    if evaluation:
        lines += ["## Evaluation", "", evaluation, ""]
    lines += ["## Intended use and limits", "", USE]
    if limits:
        lines += ["", limits]
    if licence:
        lines += ["", "## Licence", "", licence]
    path = folder / CARD
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def read_card(folder) -> dict:
    """The YAML front matter of ``folder/README.md`` ({} when there is no card)."""
    import yaml

    path = Path(folder) / CARD
    if not path.exists():
        return {}
    text = path.read_text()
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}
