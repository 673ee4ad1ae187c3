"""Small labelled dataset folders for the dataset, split and training tests.

``tiny_real_dataset`` links a few real ALL images (../shared/data/ALL, or ``$LEUKEDGE_ALL_DATA``)
into a temp folder; without that folder it falls back to synthetic smears. Nothing is copied
into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("Benign", "Early", "Pre", "Pro")
ALL_DATA = Path(os.environ.get("LEUKEDGE_ALL_DATA",
                               Path(__file__).resolve().parents[2] / "shared" / "data" / "ALL"))


def synthetic_smear(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A pale RGB background with a few purple discs (pixels the HSV mask selects)."""
    image = np.full((size, size, 3), (235, 225, 200), np.uint8)
    image = np.clip(image + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
    for _ in range(rng.integers(1, 4)):
        centre = tuple(int(v) for v in rng.integers(8, size - 8, 2))
        cv2.circle(image, centre, int(rng.integers(3, 8)), (150, 60, 200), -1)
    return image


def write_jpeg(path: Path, rgb: np.ndarray) -> Path:
    """Encode an RGB array as JPEG at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def synthetic_dataset(root: Path, per_class: int = 10, duplicates: int = 0, seed: int = 0,
                      classes=CLASSES) -> Path:
    """``root/<class>/img_NNN.jpg``; each class gets ``duplicates`` byte-identical extra copies."""
    rng = np.random.default_rng(seed)
    for label in classes:
        for i in range(per_class):
            write_jpeg(root / label / f"{label}_{i:03d}.jpg", synthetic_smear(rng))
        for d in range(duplicates):
            src = root / label / f"{label}_{d:03d}.jpg"
            (root / label / f"{label}_{d:03d}_copy.jpg").write_bytes(src.read_bytes())
    return root


def real_images(per_class: int) -> list[Path]:
    """The first ``per_class`` ALL originals of each class (sorted); [] when the data is absent."""
    return [src for label in CLASSES
            for src in sorted((ALL_DATA / "Original" / label).glob("*.jpg"))[:per_class]]


def tiny_real_dataset(root: Path, per_class: int = 8) -> Path:
    """``per_class`` real images per class linked from the ALL data, else synthetic ones."""
    sources = real_images(per_class)
    if not sources:
        return synthetic_dataset(root, per_class=per_class)
    for src in sources:
        (root / src.parent.name).mkdir(parents=True, exist_ok=True)
        (root / src.parent.name / src.name).symlink_to(src)
    return root


def read_all_manifest() -> list[tuple[str, str, str]]:
    """(class, filename, sha256) rows of the ALL MANIFEST.tsv; [] when it is absent."""
    path = ALL_DATA / "MANIFEST.tsv"
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return [(c, f, s) for c, f, s in rows]
