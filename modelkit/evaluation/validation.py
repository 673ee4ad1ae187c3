"""Local verification: how a model does on a lab's own labelled images, and whether that
passes the lab's acceptance rules (``leukedge validate``).

A lab checks an analyser on its own microscope before trusting it. The folder is
``DATA_DIR/<class>/...`` (class names as the model's, any case; subfolders are read), every
image is classified exactly as ``leukedge infer`` classifies it, and the scores are those of
:func:`~leukedge.modelkit.evaluation.review_scores.review_scores`: accuracy with its 95% Wilson
interval, per-class recall and precision, the confusion matrix, the reference study's cost per
image, the flagged rate, the errors the review flag caught and those it let through (by file),
calibration (ECE) and why images were flagged. Files that could not be classified, and files
outside the class folders, are counted and named, never dropped in silence.

Example:
    >>> result = validate_folder(Classifier("default"), "site_images/", parse_rules(None))
    >>> result.passed, result.scores["accuracy"], result.failed_rules
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from leukedge.runtime.files import display_path, find_images
from leukedge.runtime.pipeline import classify_files

from .review_scores import review_scores
from .rules import Rule, check_rules

JSON_KEYS = ("data_dir", "model", "created", "n", "classes", "scores", "unreadable",
             "outside_class_folders", "skipped", "rules", "failed_rules", "passed")


@dataclass
class SiteFolder:
    """The labelled images of a folder: (path, class index) pairs and what was left out."""

    root: Path
    classes: tuple[str, ...]
    images: list[tuple[Path, int]] = field(default_factory=list)
    outside: list[Path] = field(default_factory=list)  # files not in a class folder
    skipped: list[Path] = field(default_factory=list)  # non-image files in class folders


def read_site_folder(data_dir: str | os.PathLike, classes: Sequence[str]) -> SiteFolder:
    """``DATA_DIR/<class>/...`` -> :class:`SiteFolder`.

    Raises:
        ValueError: the folder is missing, has a folder that is not one of ``classes``
            (named, with the classes it could be), or holds no image at all.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"DATA_DIR {display_path(root)} is not a folder")
    by_name = {c.lower(): i for i, c in enumerate(classes)}
    site = SiteFolder(root, tuple(classes))
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            site.outside.append(entry)
            continue
        index = by_name.get(entry.name.lower())
        if index is None:
            raise ValueError(f"{display_path(entry)}: the model does not know the class "
                             f"{entry.name!r}; its classes are {', '.join(classes)} (one "
                             "folder per class)")
        listing = find_images([entry], recursive=True)
        site.images += [(p, index) for p in listing.paths]
        site.skipped += listing.skipped
    if not site.images:
        raise ValueError(f"DATA_DIR {display_path(root)} holds no image in a class folder "
                         f"({'/'.join(classes)}/...)")
    return site


@dataclass
class ValidationResult:
    """What ``leukedge validate`` reports (``to_dict`` has :data:`JSON_KEYS`)."""

    site: SiteFolder
    model: dict
    scores: dict
    unreadable: list[dict]
    rules: list[Rule]
    failed_rules: list[str]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))

    @property
    def passed(self) -> bool:
        return not self.failed_rules

    def to_dict(self) -> dict:
        return {"data_dir": display_path(self.site.root), "model": self.model,
                "created": self.created, "n": len(self.site.images),
                "classes": list(self.site.classes), "scores": self.scores,
                "unreadable": self.unreadable,
                "outside_class_folders": [display_path(p) for p in self.site.outside],
                "skipped": [display_path(p) for p in self.site.skipped],
                "rules": [r.text for r in self.rules], "failed_rules": self.failed_rules,
                "passed": self.passed}


def validate_folder(classifier, data_dir: str | os.PathLike, rules: Sequence[Rule],
                    batch_size: int = 16) -> ValidationResult:
    """Classify every image of a lab's labelled folder and check the acceptance ``rules``.

    An image that cannot be classified is listed in ``unreadable`` and counted against the
    rules as a flagged image (the lab would have had to look at it).
    """
    site = read_site_folder(data_dir, classifier.classes)
    paths = [p for p, _ in site.images]
    labels, predictions, names, unreadable = [], [], [], []
    for (path, label), result in zip(site.images, classify_files(classifier, paths,
                                                                 batch_size=batch_size)):
        if result.ok:
            labels.append(label)
            predictions.append(result.prediction)
            names.append(display_path(path))
        else:
            unreadable.append({"path": display_path(path), "error": result.error})
    scores = review_scores(labels, predictions, classifier.classes, names)
    n_all = len(site.images)
    scores["unreadable_rate"] = len(unreadable) / n_all
    # flagged over every image: an unreadable file is one more image a person must handle
    scores["flagged_rate"] = (scores["flagged_rate"] * len(labels) + len(unreadable)) / n_all
    return ValidationResult(site, dict(classifier.provenance), scores, unreadable, list(rules),
                            check_rules(rules, scores))
