"""Parcel extraction time for a whole-brain 2 mm run, first call vs cached (memory=).

    python bench/fmri.py                # 2 mm MNI run, 200 TRs (about 1.4 GB of float32)
    python bench/fmri.py --trs 20 --voxel 4   # seconds (used by the tests)

The run is synthetic, in MNI space (nilearn's bundled MNI152 brain mask), so nothing is
downloaded. Atlases: Power-264 spheres (bundled coordinates) and a 200-parcel labels
image cut from the same mask by k-means on voxel coordinates. Each extraction runs twice
with the same joblib cache folder; the second call reads the cached result.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


def make_run(folder: Path, voxel: float, trs: int, t_r: float = 0.72):
    import nibabel as nib
    from nilearn import datasets, image
    from sklearn.cluster import MiniBatchKMeans

    mask = image.resample_img(datasets.load_mni152_brain_mask(),
                              target_affine=np.diag([voxel] * 3), interpolation="nearest",
                              copy_header=True, force_resample=True)  # fmt: skip
    brain = np.asarray(mask.dataobj) > 0
    rng = np.random.default_rng(0)
    data = np.zeros(brain.shape + (trs,), np.float32)
    data[brain] = 100 + rng.standard_normal((int(brain.sum()), trs), dtype=np.float32)
    img = nib.Nifti1Image(data, mask.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = t_r
    run = folder / "run.nii.gz"
    img.to_filename(run)
    ijk = np.argwhere(brain)
    labels = np.zeros(brain.shape, np.int16)
    km = MiniBatchKMeans(200, random_state=0, n_init=1).fit(ijk)
    labels[tuple(ijk.T)] = km.labels_ + 1
    atlas = folder / "kmeans200.nii.gz"
    nib.Nifti1Image(labels, mask.affine).to_filename(atlas)
    return run, atlas, brain.sum()


def main(argv=None) -> None:
    from neurofm.io.fmri import read_fmri
    from neurofm.utils import peak_rss_mib

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voxel", type=float, default=2.0, help="voxel size (mm)")
    p.add_argument("--trs", type=int, default=200)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        run, atlas, voxels = make_run(tmp, args.voxel, args.trs)
        print(f"synthetic MNI run: {args.voxel:g} mm, {voxels} brain voxels x {args.trs} TRs "
              f"(made in {time.perf_counter() - start:.1f} s)")  # fmt: skip
        print(f"{'atlas':<22} {'parcels':>7} {'first s':>8} {'cached s':>9} {'speed-up':>9}")
        for name, spec in (("power2011 (spheres)", "power2011"), ("kmeans-200 (labels)", atlas)):
            cache = tmp / f"cache_{len(name)}"
            times = []
            for _ in range(2):
                start = time.perf_counter()
                series = read_fmri(run, spec, memory=str(cache))
                times.append(time.perf_counter() - start)
            print(f"{name:<22} {series.shape[1]:>7} {times[0]:>8.2f} {times[1]:>9.2f} "
                  f"{times[0] / times[1]:>8.1f}x")  # fmt: skip
        print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
