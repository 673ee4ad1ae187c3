"""Add the ``heatmap`` output to a leukedge model written before it existed, from the graph alone.

The heatmap (docs/heatmap.md) is built from what the file already holds: the network's pooled
feature map, its head and ``probs``. No weights are copied or changed, so every other output is
bit-identical (checked here on the bundled samples before anything is written). Works on FP32,
FP16 and INT8 (QDQ) one-file models and on ensembles (their CNN member). The contract lists the
new output and records the file it came from (``provenance.heatmap_added``: its sha256).

    python bench/add_heatmap.py IN.onnx OUT.onnx [--overwrite]

The bundled models are not rewritten in place by default: their SHA256SUMS and test vectors
name the exact files (bench/make_testvectors.py remakes the vectors afterwards).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from leukedge.modelkit.graph.heatmap import HEATMAP, HeatmapError, add_heatmap, has_heatmap
from leukedge.runtime.contract import contract_of_proto, embed_contract, save_model
from leukedge.runtime.decode import load_image
from leukedge.runtime.files import sha256_file
from leukedge.runtime.models import SAMPLES_DIR


def _outputs(proto: onnx.ModelProto, names: list[str], pixels: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {"image": pixels})


def with_heatmap(source: Path) -> onnx.ModelProto:
    """The model of ``source`` with the heatmap output and its contract updated.

    Raises:
        ValueError: the file has the output already, or no network to explain (HeatmapError).
    """
    proto = onnx.load(str(source))
    if has_heatmap(proto):
        raise ValueError(f"{source}: has a {HEATMAP!r} output already")
    contract = contract_of_proto(proto, str(source))
    added = add_heatmap(proto)
    samples = sorted(SAMPLES_DIR.glob("*/*.jpg"))
    pixels = np.stack([load_image(p) for p in samples])
    names = list(contract.outputs)
    for name, before, after in zip(names, _outputs(proto, names, pixels),
                                   _outputs(added, names, pixels)):
        if not np.array_equal(before, after):
            raise RuntimeError(f"{source}: output {name!r} changed when the heatmap was added")
    heatmap = _outputs(added, [HEATMAP], pixels)[0]
    if heatmap.shape[0] != len(samples) or not (0 <= heatmap.min() and heatmap.max() <= 1):
        raise RuntimeError(f"{source}: the heatmap has shape {heatmap.shape}, range "
                           f"[{heatmap.min()}, {heatmap.max()}]")
    provenance = {**contract.provenance, "heatmap_added": {"from_sha256": sha256_file(source)}}
    return embed_contract(added, contract.with_updates(outputs=(*contract.outputs, HEATMAP),
                                                       provenance=provenance))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a leukedge one-file model or ensemble")
    parser.add_argument("out", type=Path, help="where the model with the heatmap goes")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        print(f"{args.out} exists; choose another OUT or pass --overwrite", file=sys.stderr)
        return 2
    try:
        proto = with_heatmap(args.source)
    except (ValueError, HeatmapError) as e:
        print(str(e), file=sys.stderr)
        return 2
    save_model(proto, args.out)
    shape = _outputs(proto, [HEATMAP], np.zeros((1, 224, 224, 3), np.uint8))[0].shape[1:]
    print(f"wrote {args.out}: heatmap {shape[0]} x {shape[1]} per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
