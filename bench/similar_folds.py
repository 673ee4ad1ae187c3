"""How much the cross-validation folds mix fields of one slide: similar-field groups
(modelkit/similar_fields.py) against the duplicate-grouped folds that every figure so far used.

    python bench/similar_folds.py --data ../shared/data/ALL

Prints the groups' sizes, how many images share a similar-field group with an image of another
fold under duplicate grouping (what similarity grouping removes), and writes the figures as
JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from leukedge.modelkit.dataset import discover_dataset
from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.modelkit.similar_fields import MAX_SHARE, similar_field_groups
from leukedge.modelkit.splits import make_folds
from leukedge.runtime.files import atomic_write_text
from leukedge.train.fit import prepare_images
from leukedge.train.recipes import CV_FOLDS, CV_SEED


def straddling(groups: dict[str, str], folds: dict[str, int]) -> int:
    """Images whose group has members in more than one fold."""
    spread: dict[str, set] = {}
    for path, key in groups.items():
        spread.setdefault(key, set()).add(folds[path])
    return sum(len(spread[groups[p]]) > 1 for p in groups)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    prepared = prepare_images(discover_dataset(args.data))
    similar = similar_field_groups(prepared.images, prepared.relpaths, prepared.labels,
                                   prepared.groups)
    folds = make_folds(prepared.dataset, CV_FOLDS, CV_SEED, prepared.groups)
    sizes = Counter(Counter(similar.values()).values())
    result = {
        "images": len(prepared.relpaths), "max_share": MAX_SHARE,
        "duplicate_groups": len(set(prepared.groups.values())),
        "similar_groups": len(set(similar.values())),
        "similar_group_sizes": {str(k): v for k, v in sorted(sizes.items())},
        "images_whose_similar_group_straddles_duplicate_folds": straddling(similar, folds),
        "seconds": round(time.perf_counter() - started, 1), "machine": describe_machine(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
