"""Ship the small pretrained checkpoints made on ``../shared/data/eeg`` inside the package.

``make sample-weights`` runs the whole recipe on a 2-core CPU::

    neurofm preprocess configs/preprocess/shared_eeg.yaml        # 52 recordings, 1.55 h
    neurofm pretrain configs/pretrain/eeg_tiny_tokenizer.yaml    # stage 1: VQ tokenizer
    neurofm pretrain configs/pretrain/eeg_tiny_codes.yaml        # stage 2: masked codes
    python bench/probes.py --model runs/eeg-tiny-codes/checkpoint --out runs/probes.json
    python -m neurofm.train.sample                               # this module

This module copies each run's ``config.json``, ``model.safetensors`` and ``curves.png``
into ``neurofm/resources/weights/<name>/`` and writes its model card, so that
``neurofm.load_model("eeg-tiny.sample")`` works offline on any install.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..models.card import write_card

SHIPPED = Path(__file__).resolve().parents[1] / "resources" / "weights"
SOURCES = (
    "Sources: PhysioNet EEG Motor Movement/Imagery (eegmmidb, subject S001, runs 1-4; Schalk "
    "et al. 2004, IEEE TBME 51:1034) and EEG During Mental Arithmetic Tasks (EEGMAT, subjects "
    "0-19; Zyma et al. 2019, Data 4:14), both ODC-By 1.0 via PhysioNet (Goldberger et al. "
    "2000); and MNE-Python's testing recordings (BSD-3) in BDF, BrainVision, EDF, EEGLAB, CNT, "
    "Nihon Kohden, Persyst and ANT formats. CHB-MIT was held out (the seizure fine-tuning "
    "evaluates on it)."
)
LICENCE = (
    "The weights are released with neurofm under its licence. They were trained on ODC-By 1.0 "
    "data: cite the datasets above when you use them."
)
LIMITS = (
    "Trained on 1.55 hours of EEG from 29 subjects, mostly resting and mental arithmetic "
    "recordings of 19 channels: a demonstration that the pipeline trains end to end on "
    "real data, small enough to ship and to fine-tune on a laptop. It is not a foundation "
    "model: it has seen no sleep, no clinical, no pediatric, no seizure EEG, and its 0.3M "
    "parameters hold little. Use it for tutorials, tests, pipelines and as a starting point "
    "to compare against random initialisation; use LaBraM-scale weights (labram-base) for "
    "research results."
)
CARDS = {
    "eeg-tiny.sample": dict(
        run="runs/eeg-tiny-codes",
        summary="eeg-tiny (dim 100, 2 layers, 5 heads) pretrained by LaBraM's masked code "
        "prediction (50% of real tokens hidden plus the symmetric complement) with the "
        "tokenizer-tiny.sample neural tokenizer, on the real recordings of the project's "
        "shared data: 200 Hz, 0.1-75 Hz, 1 s patches, 4 s windows.",
    ),
    "tokenizer-tiny.sample": dict(
        run="runs/eeg-tiny-tokenizer",
        summary="tokenizer-tiny: LaBraM's VQ neural tokenizer at CPU size (eeg-tiny's encoder, "
        "512 codes x 32 dims, cosine k-means init, EMA codebook, 2-layer decoder predicting the "
        "z-scored rFFT amplitude and phase of each 1 s patch), trained on the same recordings. "
        "tokenizer.codes(tokens) gives a code id per patch for analysis.",
    ),
}


MADE = (
    "Made on the project's 2-core CPU (no GPU) by `make sample-weights`: sharding 29 s, the "
    "tokenizer (600 steps of 32 windows) 206 s, masked code prediction (1,000 steps of 32 "
    "windows) 494 s: under 12 minutes in all, each stage with one torch thread while other "
    "jobs held the second core."
)
PROBE_NOTE = (
    "The probe recordings (EEGMAT, eegmmidb runs 1-2) are in the pretraining corpus, without "
    "their labels: the probes ask whether self-supervision on them organised the features "
    "by a condition it was never told. Windows are the checkpoint's 4 s; the eegmmidb probe "
    "has one subject (30 windows, folds of contiguous time), so it measures separability "
    "within one person. Band power + logistic regression stays far ahead on eyes open vs "
    "closed (an alpha-power effect it reads directly)."
)


def _evaluation(probes: Path | None) -> str:
    if probes is None or not probes.exists():
        return ""
    data = json.loads(probes.read_text())
    rows = ["| probe | chance | this checkpoint (frozen) | same architecture, random init | "
            "band power + logistic regression |", "|---|---|---|---|---|"]  # fmt: skip
    for name, probe in data["probes"].items():
        arms = probe["arms"]
        cells = [f"{r['mean']:.3f} ± {r['sd']:.3f}" for r in
                 (arms[a]["balanced_accuracy"] for a in ("pretrained", "random init", "band power + LR"))]  # fmt: skip
        rows.append(f"| {name} | {arms['pretrained']['chance']:.2f} | " + " | ".join(cells) + " |")
    seeds = data.get("seeds")
    return ("Linear probes on frozen features (balanced accuracy, mean ± sd over seeds "
            f"{seeds}; `bench/probes.py`), labels pretraining never saw:\n\n" + "\n".join(rows)
            + "\n\n" + PROBE_NOTE)  # fmt: skip


def ship(name: str, root: Path, corpus: Path, probes: Path | None) -> Path:
    spec = CARDS[name]
    run = root / spec["run"]
    source = run / "checkpoint"
    dest = SHIPPED / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy2(source / f, dest / f)
    if (run / "curves.png").exists():
        shutil.copy2(run / "curves.png", dest / "curves.png")
    evaluation = _evaluation(probes) if name.startswith("eeg-") else ""
    write_card(dest, run=run, corpus=corpus, name=name, summary=spec["summary"] + "\n\n" + MADE,
               sources=SOURCES,
               licence=LICENCE, evaluation=evaluation, limits=LIMITS)  # fmt: skip
    return dest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="where runs/ is")
    parser.add_argument("--corpus", type=Path, default=Path("out/corpora/shared_eeg"))
    parser.add_argument("--probes", type=Path, default=Path("runs/probes.json"))
    args = parser.parse_args(argv)
    for name in CARDS:
        print(f"shipped {name} -> {ship(name, args.root, args.corpus, args.probes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
