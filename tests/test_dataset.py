"""Dataset discovery, the duplicate-aware stratified split and split manifests (no TensorFlow)."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from dataset_builders import ALL_DATA, CLASSES, read_all_manifest, synthetic_dataset
from leukedge.modelkit.dataset import Dataset, ImageRecord, data_manifest_sha256, discover_dataset
from leukedge.modelkit.duplicates import duplicate_groups, near_duplicate_pairs, thumbnail
from leukedge.modelkit.splits import (SplitManifest, make_folds, make_split, read_split_manifest,
                                     select_split, write_split_manifest)


@pytest.fixture()
def synth(tmp_path) -> Path:
    return synthetic_dataset(tmp_path / "data", per_class=12, duplicates=3)


# --------------------------------------------------------------------------- discovery

def test_discovers_flat_layout(synth):
    ds = discover_dataset(synth)
    assert ds.classes == CLASSES
    assert len(ds.records) == 4 * 15
    assert ds.records[0].relpath == "Benign/Benign_000.jpg"
    assert len(ds.records[0].sha256) == 64
    assert ds.path(ds.records[0]).is_file()


def test_discovers_all_layout_and_variants(tmp_path):
    synthetic_dataset(tmp_path / "ALL" / "Original", per_class=3)
    synthetic_dataset(tmp_path / "ALL" / "Segmented", per_class=2)
    assert len(discover_dataset(tmp_path / "ALL").records) == 12
    seg = discover_dataset(tmp_path / "ALL", variant="segmented")
    assert len(seg.records) == 8 and seg.variant == "segmented"


def test_segmented_variant_needs_its_folder(synth):
    with pytest.raises(ValueError, match="no 'Segmented' folder"):
        discover_dataset(synth, variant="segmented")
    with pytest.raises(ValueError, match="Unknown variant 'colour'. Valid: original, segmented"):
        discover_dataset(synth, variant="colour")


def test_unknown_folder_names_folder_and_valid_classes(synth):
    (synth / "Blasts").mkdir()
    with pytest.raises(ValueError, match=r"\['Blasts'\].*Valid classes: Benign, Early, Pre, Pro"):
        discover_dataset(synth)


def test_missing_and_empty_classes_are_errors(synth, tmp_path):
    for f in (synth / "Pre").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="Class 'Pre' has no usable image"):
        discover_dataset(synth)
    (synth / "Pre").rmdir()
    with pytest.raises(ValueError, match=r"\['Pre'\] missing"):
        discover_dataset(synth)
    with pytest.raises(ValueError, match="does not exist"):
        discover_dataset(tmp_path / "nowhere")


def test_unreadable_files_are_listed_and_skipped(synth):
    (synth / "Pro" / "empty.jpg").write_bytes(b"")
    (synth / "Pro" / "notes.txt").write_text("hello")
    ds = discover_dataset(synth)
    skipped = dict(ds.skipped)
    assert skipped["Pro/empty.jpg"] == "empty file (0 bytes)"
    assert "not an image file" in skipped["Pro/notes.txt"]
    assert all(r.relpath not in skipped for r in ds.records)
    dropped = ds.without({"Pro/Pro_005.jpg": "truncated JPEG"})
    assert len(dropped.records) == len(ds.records) - 1
    assert ("Pro/Pro_005.jpg", "truncated JPEG") in dropped.skipped


# --------------------------------------------------------------------------- split

def _split_of(manifest: SplitManifest) -> dict[str, str]:
    return {e["path"]: e["split"] for e in manifest.entries}


def _groups_straddling(manifest: SplitManifest) -> list[str]:
    splits_by_sha = defaultdict(set)
    for e in manifest.entries:
        splits_by_sha[e["sha256"]].add(e["split"])
    return [sha for sha, splits in splits_by_sha.items() if len(splits) > 1]


def test_split_is_stratified_and_complete(synth):
    ds = discover_dataset(synth)
    manifest = make_split(ds, seed=42)
    assert len(manifest.entries) == len(ds.records)
    for label, n in ((c, 15) for c in CLASSES):
        counts = {s: manifest.counts()[s][label] for s in ("train", "val", "test")}
        assert sum(counts.values()) == n
        assert abs(counts["test"] - 0.16 * n) <= 1.5 and abs(counts["val"] - 0.20 * n) <= 1.5


def test_split_is_deterministic_and_seeded(synth):
    ds = discover_dataset(synth)
    assert make_split(ds, seed=7).entries == make_split(ds, seed=7).entries
    assert _split_of(make_split(ds, seed=7)) != _split_of(make_split(ds, seed=8))
    shuffled = Dataset(ds.root, ds.classes, tuple(reversed(ds.records)))
    assert make_split(shuffled, seed=7).entries == make_split(ds, seed=7).entries


def test_synthetic_duplicates_never_straddle(synth):
    ds = discover_dataset(synth)
    for seed in range(20):
        manifest = make_split(ds, seed=seed)
        assert not _groups_straddling(manifest)
        split = _split_of(manifest)
        for label in CLASSES:
            for d in range(3):
                assert split[f"{label}/{label}_{d:03d}.jpg"] == split[f"{label}/{label}_{d:03d}_copy.jpg"]


def test_real_manifest_duplicates_never_straddle():
    rows = read_all_manifest()
    if not rows:
        pytest.skip("ALL data not present")
    records = tuple(ImageRecord(f"{c}/{f}", c, s) for c, f, s in rows)
    ds = Dataset(Path("/nonexistent"), CLASSES, records)
    copies = Counter(r.sha256 for r in records)
    duplicated = [r for r in records if copies[r.sha256] > 1]
    # 33 of the README's 40 byte-identical pairs (all in Pro) are in the development part
    assert len(duplicated) >= 60 and {r.label for r in duplicated} == {"Pro"}
    for seed in (0, 1, 42):
        manifest = make_split(ds, seed=seed)
        assert not _groups_straddling(manifest)
        counts = manifest.counts()
        for label in CLASSES:
            n = sum(counts[s][label] for s in counts)
            assert abs(counts["test"][label] - 0.16 * n) <= 2
            assert abs(counts["val"][label] - 0.20 * n) <= 2


def test_fractions_are_checked(synth):
    with pytest.raises(ValueError, match="summing to 1"):
        make_split(discover_dataset(synth), fractions=(0.7, 0.2, 0.2))


# --------------------------------------------------------------------------- manifests

def test_data_manifest_hash_ignores_order_and_sees_content():
    a = [ImageRecord("A/1.jpg", "A", "aa"), ImageRecord("B/2.jpg", "B", "bb")]
    assert data_manifest_sha256(a) == data_manifest_sha256(a[::-1])
    assert data_manifest_sha256(a) != data_manifest_sha256([a[0], ImageRecord("B/2.jpg", "B", "bc")])


def test_manifest_roundtrip_and_test_selection(synth, tmp_path):
    ds = discover_dataset(synth)
    manifest = make_split(ds, seed=3)
    digest = write_split_manifest(tmp_path / "split.json", manifest)
    raw = (tmp_path / "split.json").read_bytes()
    import hashlib

    assert hashlib.sha256(raw).hexdigest() == digest
    data = json.loads(raw)
    assert data["seed"] == 3 and data["fractions"] == {"train": 0.64, "val": 0.2, "test": 0.16}
    assert data["data_manifest_sha256"] == ds.manifest_sha256()
    assert set(data["files"][0]) == {"path", "class", "split", "sha256", "group"}
    back = read_split_manifest(tmp_path / "split.json")
    assert back.entries == manifest.entries and back.seed == 3
    test = select_split(ds, back, "test")
    assert [r.relpath for r in test] == back.paths("test") and test


def test_select_split_checks_files(synth, tmp_path):
    ds = discover_dataset(synth)
    manifest = make_split(ds, seed=3)
    victim = manifest.paths("test")[0]
    (synth / victim).write_bytes((synth / "Benign" / "Benign_011.jpg").read_bytes() + b"x")
    changed = discover_dataset(synth)
    with pytest.raises(ValueError, match="differ from the manifest"):
        select_split(changed, manifest, "test")
    assert len(select_split(changed, manifest, "test", verify_sha256=False)) == len(manifest.paths("test"))
    (synth / victim).unlink()
    with pytest.raises(ValueError, match="not in"):
        select_split(discover_dataset(synth), manifest, "test")
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        select_split(ds, manifest, "dev")


def test_reading_a_bad_manifest_says_so(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a leukedge split manifest"):
        read_split_manifest(tmp_path / "x.json")
    with pytest.raises(ValueError, match="Cannot read split manifest"):
        read_split_manifest(tmp_path / "missing.json")


def test_dataset_metrics_and_train_package_import_without_tensorflow():
    import subprocess

    code = ("import sys, leukedge.modelkit.dataset, leukedge.modelkit.metrics, leukedge.train; "
            "heavy = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- near duplicates, folds


def test_near_duplicates_join_a_group_and_different_views_do_not():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    nudged = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    other = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    thumbs = np.stack([thumbnail(im) for im in (base, nudged, other)])
    assert [(i, j) for i, j, _ in near_duplicate_pairs(thumbs)] == [(0, 1)]
    groups = duplicate_groups(["b.jpg", "a.jpg", "c.jpg", "d.jpg"], ["1", "2", "3", "3"],
                              np.concatenate([thumbs, thumbs[2:]]))
    assert groups == {"b.jpg": "a.jpg", "a.jpg": "a.jpg", "c.jpg": "c.jpg", "d.jpg": "c.jpg"}


def _groups_straddle(assignment: dict[str, object], groups: dict[str, str]) -> list[str]:
    seen: dict[str, set] = defaultdict(set)
    for path, where in assignment.items():
        seen[groups[path]].add(where)
    return [g for g, places in seen.items() if len(places) > 1]


def test_folds_are_grouped_stratified_and_balanced(synth):
    ds = discover_dataset(synth)
    groups = {r.relpath: r.sha256 for r in ds.records}
    folds = make_folds(ds, k=3, seed=1, groups=groups)
    assert set(folds) == {r.relpath for r in ds.records}
    assert not _groups_straddle(folds, groups)
    for label in CLASSES:
        sizes = Counter(f for p, f in folds.items() if p.startswith(label))
        assert max(sizes.values()) - min(sizes.values()) <= 2
    assert folds == make_folds(ds, k=3, seed=1, groups=groups)
    with pytest.raises(ValueError, match="k must be >= 2"):
        make_folds(ds, k=1)


def test_the_real_near_duplicates_never_straddle_a_fold():
    """The ALL data's consecutive near-identical views (not byte-identical) share a fold."""
    from leukedge.runtime.decode import load_image

    root = ALL_DATA / "Original"
    if not root.is_dir():
        pytest.skip(f"ALL data not at {root}")
    ds = discover_dataset(ALL_DATA)
    wanted = {"Early/WBC-Malignant-Early-559.jpg", "Early/WBC-Malignant-Early-561.jpg",
              "Benign/WBC-Benign-500.jpg", "Benign/WBC-Benign-501.jpg"}
    records = [r for r in ds.records if r.label in ("Early", "Benign")]
    thumbs = np.stack([thumbnail(load_image(ds.path(r))) for r in records])
    groups = duplicate_groups([r.relpath for r in records], [r.sha256 for r in records], thumbs)
    assert groups["Early/WBC-Malignant-Early-561.jpg"] == "Early/WBC-Malignant-Early-559.jpg"
    assert groups["Benign/WBC-Benign-501.jpg"] == "Benign/WBC-Benign-500.jpg"
    assert wanted <= set(groups)
    sub = Dataset(ds.root, ("Benign", "Early"), tuple(records))
    folds = make_folds(sub, k=5, seed=0, groups=groups)
    assert not _groups_straddle(folds, groups)
