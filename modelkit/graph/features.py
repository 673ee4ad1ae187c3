"""Hand-made image features as an ONNX graph: the inputs of the classical (SVM, XGBoost) models.

The reference study compares its CNNs with an SVM and XGBoost on hand-made features. leukedge
computes those features in ONE place, this graph, with standard ONNX ops (opset 18), so that a
classical model is again a one-file model that takes raw uint8 pixels: training runs the graph
in ONNX Runtime on the preprocessed training images, and export puts it in front of the
converted classifier.

Input: ``image``, float32 [N, S, S, 3], RGB on 0-255 (the preprocessing graph's network image
with mean 0 and std 1, i.e. the resized pixels). Output: ``features``, float32 [N, F], F =
:data:`N_FEATURES`, in the order of :func:`feature_names`:

- HSV histograms, 16 bins per channel on [0, 1], over all pixels (48) and over the pixels of the
  reference study's stain mask (48; all zero when the mask is empty);
- colour moments: mean and standard deviation of H, S and V (6) and their means inside the mask
  (3);
- the mask's area fraction and the broad stain coverage of the preprocessing graph (2);
- grey-level gradients (Sobel, on the BT.601 grey level on [0, 1]): mean and standard deviation
  of the magnitude (2), a histogram of the magnitude in 8 bins (8), and the mean absolute
  derivative in 4 directions (0, 45, 90, 135 degrees), normalised to sum 1 (4);
- grey-level co-occurrence (8 grey levels, pixel distances 1 and 2, the 4 directions averaged
  and symmetrised): contrast, dissimilarity, homogeneity, angular second moment, entropy and
  correlation per distance (12).

Every feature is a standard op: a histogram is a ``ScatterElements`` with ``reduction="add"``
of bin indices, the co-occurrence matrix the same of ``a * 8 + b`` over the pixel pairs of the 4
directions, symmetrised with its transpose. Gradients are taken on the valid region (no zero
border). Checked against scikit-image's ``graycomatrix``/``graycoprops`` in the tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from leukedge.runtime.preprocessing import HsvMaskSpec

from .preprocess import LUMA, Builder, checked_model, hsv_channels, stain_colour, stain_mask

INPUT = "image"
OUTPUT = "features"
HSV_BINS = 16
MAGNITUDE_EDGES = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8)  # Sobel magnitude on [0, 1] grey
GLCM_LEVELS = 8
GLCM_DISTANCES = (1, 2)
GLCM_STATS = ("contrast", "dissimilarity", "homogeneity", "asm", "entropy", "correlation")
DIRECTIONS = (0, 45, 90, 135)
_EPS = 1e-6


def feature_names() -> list[str]:
    """The names of the F features, in output order."""
    names = [f"hsv_{c}_bin{i:02d}" for c in "hsv" for i in range(HSV_BINS)]
    names += [f"masked_hsv_{c}_bin{i:02d}" for c in "hsv" for i in range(HSV_BINS)]
    names += [f"{stat}_{c}" for c in "hsv" for stat in ("mean", "std")]
    names += [f"masked_mean_{c}" for c in "hsv"]
    names += ["mask_fraction", "stain_coverage", "gradient_mean", "gradient_std"]
    names += [f"gradient_bin{i}" for i in range(len(MAGNITUDE_EDGES) + 1)]
    names += [f"direction_{d}" for d in DIRECTIONS]
    names += [f"glcm_d{d}_{stat}" for d in GLCM_DISTANCES for stat in GLCM_STATS]
    return names


N_FEATURES = len(feature_names())


def _bincount(b: Builder, index: str, bins: int, weights: str | None, tag: str) -> str:
    """[N, bins]: per image, the weighted count of each value of ``index`` (int64 [N, ...],
    values 0..bins-1), divided by the total weight (the share; 0 where nothing was counted).

    One ``ScatterElements`` with ``reduction="add"`` (opset 16+): linear in the pixels, where a
    ``OneHot`` would be linear in pixels x bins."""
    flat_shape = b.const(f"{tag}_bc_flat", [0, -1], np.int64)
    idx = b.op("Reshape", [index, flat_shape])
    n = b.op("Slice", [b.op("Shape", [idx]), b.const(f"{tag}_bc_n0", [0], np.int64),
                       b.const(f"{tag}_bc_n1", [1], np.int64)])
    zeros = b.op("Expand", [b.const(f"{tag}_bc_zero", [[0.0]], broadcast=False),
                            b.op("Concat", [n, b.const(f"{tag}_bc_bins", [bins], np.int64)], axis=0)])
    if weights is None:
        updates = b.op("Expand", [b.const(f"{tag}_bc_one", [[1.0]], broadcast=False),
                                  b.op("Shape", [idx])])
    else:
        updates = b.op("Reshape", [weights, flat_shape])
    counts = b.op("ScatterElements", [zeros, idx, updates], axis=1, reduction="add")
    total = b.op("ReduceSum", [updates, b.const(f"{tag}_bc_axis", [1], np.int64)], keepdims=1)
    return b.op("Div", [counts, b.op("Max", [total, b.const(f"{tag}_bc_eps", _EPS,
                                                                 broadcast=False)])])


def _histogram(b: Builder, channels: str, bins: int, weights: str | None, tag: str) -> str:
    """[N, C * bins]: per channel of [N, H, W, C] on [0, 1], the share of pixels per bin (with
    ``weights`` [N, H, W, 1]: the weighted share, 0 where the weights sum to 0)."""
    from onnx import TensorProto

    scaled = b.op("Floor", [b.op("Mul", [channels, b.const(f"{tag}_scale", float(bins))])])
    index = b.op("Cast", [b.op("Clip", [scaled, b.const(f"{tag}_lo", 0.0, broadcast=False),
                                         b.const(f"{tag}_hi", bins - 1.0, broadcast=False)])],
                 to=TensorProto.INT64)  # [N, H, W, C]
    offsets = b.const(f"{tag}_offsets", np.arange(3).reshape(1, 1, 1, 3) * bins, np.int64)
    index = b.op("Add", [index, offsets])
    if weights is not None:
        weights = b.op("Expand", [weights, b.op("Shape", [index])])
    # each channel's bins sum to the image's share 1 per channel: scale by the channel count
    share = _bincount(b, index, 3 * bins, weights, tag)
    return b.op("Mul", [share, b.const(f"{tag}_channels", [[3.0]], broadcast=False)])


def _flat(b: Builder, x: str, tag: str) -> str:
    return b.op("Reshape", [x, b.const(f"{tag}_shape", [0, -1], np.int64)])


def _colour(b: Builder, hsv: str, mask_f: str) -> list[str]:
    axes = b.const("moment_axes", [1, 2], np.int64)
    mean = b.op("ReduceMean", [hsv, axes], keepdims=0)  # [N, 3]
    mean_sq = b.op("ReduceMean", [b.op("Mul", [hsv, hsv]), axes], keepdims=0)
    std = b.op("Sqrt", [b.op("Relu", [b.op("Sub", [mean_sq, b.op("Mul", [mean, mean])])])])
    moments = b.op("Reshape", [b.op("Concat", [b.op("Unsqueeze", [mean, b.const("ax2", [2], np.int64)]),
                                               b.op("Unsqueeze", [std, b.const("ax2b", [2], np.int64)])],
                                    axis=2), b.const("moments_shape", [0, 6], np.int64)])
    mass = b.op("Max", [b.op("ReduceSum", [mask_f, axes], keepdims=0),
                        b.const("mass_eps", _EPS, broadcast=False)])
    masked_mean = b.op("Div", [b.op("ReduceSum", [b.op("Mul", [hsv, mask_f]), axes], keepdims=0),
                               mass])
    return [moments, masked_mean]


def _conv(b: Builder, grey_nchw: str, kernel: np.ndarray, tag: str) -> str:
    k = b.const(tag, kernel.reshape(1, 1, 3, 3), broadcast=False)
    return b.op("Conv", [grey_nchw, k])  # valid region only: no zero border


def _gradients(b: Builder, grey_nchw: str) -> list[str]:
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 4.0
    gx = _conv(b, grey_nchw, sobel_x, "sobel_x")
    gy = _conv(b, grey_nchw, sobel_x.T.copy(), "sobel_y")
    magnitude = b.op("Sqrt", [b.op("Add", [b.op("Mul", [gx, gx]), b.op("Mul", [gy, gy])])])
    axes = b.const("grad_axes", [1, 2, 3], np.int64)
    mean = b.op("ReduceMean", [magnitude, axes], keepdims=0)  # [N]
    mean_sq = b.op("ReduceMean", [b.op("Mul", [magnitude, magnitude]), axes], keepdims=0)
    std = b.op("Sqrt", [b.op("Relu", [b.op("Sub", [mean_sq, b.op("Mul", [mean, mean])])])])
    stats = b.op("Concat", [b.op("Unsqueeze", [t, b.const(f"grad_ax_{i}", [1], np.int64)])
                            for i, t in enumerate((mean, std))], axis=1)  # [N, 2]
    # magnitude bins by counting the edges below each pixel (edges are not evenly spaced)
    edges = b.const("mag_edges", np.reshape(MAGNITUDE_EDGES, (1, 1, 1, 1, -1)), broadcast=False)
    from onnx import TensorProto

    above = b.op("Cast", [b.op("GreaterOrEqual", [b.op("Unsqueeze", [
        magnitude, b.const("mag_axis", [4], np.int64)]), edges])], to=TensorProto.FLOAT)
    index = b.op("Cast", [b.op("ReduceSum", [above, b.const("edge_axis", [4], np.int64)],
                               keepdims=0)], to=TensorProto.INT64)  # [N, 1, H, W]
    hist = _bincount(b, index, len(MAGNITUDE_EDGES) + 1, None, "mag")  # [N, 8]
    diagonal = (gx, gy)
    d45 = b.op("Mul", [b.op("Add", list(diagonal)), b.const("inv_sqrt2", 2 ** -0.5, broadcast=False)])
    d135 = b.op("Mul", [b.op("Sub", list(diagonal)), b.const("inv_sqrt2b", 2 ** -0.5, broadcast=False)])
    energies = [b.op("ReduceMean", [b.op("Abs", [t]), axes], keepdims=1) for t in (gx, d45, gy, d135)]
    energy = _flat(b, b.op("Concat", energies, axis=1), "dir")  # [N, 4]
    total = b.op("Max", [b.op("ReduceSum", [energy, b.const("dir_axis", [1], np.int64)], keepdims=1),
                         b.const("dir_eps", _EPS, broadcast=False)])
    return [stats, hist, b.op("Div", [energy, total])]


def _glcm_weights() -> np.ndarray:
    """[L*L, 4] weights of the linear statistics (contrast, dissimilarity, homogeneity, level)."""
    i, j = np.divmod(np.arange(GLCM_LEVELS ** 2), GLCM_LEVELS)
    d = (i - j).astype(np.float64)
    return np.stack([d ** 2, np.abs(d), 1.0 / (1.0 + d ** 2), i], axis=1).astype(np.float32)


def _glcm(b: Builder, levels: str, distance: int) -> str:
    """[N, 6] co-occurrence statistics at one pixel distance (directions averaged)."""
    L = GLCM_LEVELS
    tag = f"glcm{distance}"

    def window(y0, y1, x0, x1, name):  # levels[:, y0:H-y1, x0:W-x1]
        starts = b.const(f"{tag}_{name}_s", [y0, x0], np.int64)
        ends = b.const(f"{tag}_{name}_e", [-y1 if y1 else np.iinfo(np.int64).max,
                                           -x1 if x1 else np.iinfo(np.int64).max], np.int64)
        return b.op("Slice", [levels, starts, ends, b.const(f"{tag}_{name}_ax", [1, 2], np.int64)])

    d = distance
    pairs = [(window(0, 0, 0, d, "h0"), window(0, 0, d, 0, "h1")),  # 0 degrees
             (window(d, 0, 0, d, "a0"), window(0, d, d, 0, "a1")),  # 45 degrees
             (window(0, d, 0, 0, "v0"), window(d, 0, 0, 0, "v1")),  # 90 degrees
             (window(0, d, 0, d, "b0"), window(d, 0, d, 0, "b1"))]  # 135 degrees
    Lc = b.const(f"{tag}_L", np.int64(L), np.int64)
    flat = b.const(f"{tag}_flat2", [0, -1], np.int64)
    codes = [b.op("Reshape", [b.op("Add", [b.op("Mul", [a, Lc]), c]), flat]) for a, c in pairs]
    # each direction's pairs count equally: the 4 windows differ in size by at most a row
    p = _bincount(b, b.op("Concat", codes, axis=1), L * L, None, tag)
    transpose = (np.arange(L * L) % L) * L + np.arange(L * L) // L
    p_t = b.op("Gather", [p, b.const(f"{tag}_transpose", transpose, np.int64)], axis=1)
    p = b.op("Mul", [b.op("Add", [p, p_t]), b.const(f"{tag}_half", [[0.5]], broadcast=False)])
    linear = b.op("MatMul", [p, b.const(f"{tag}_w", _glcm_weights(), broadcast=False)])  # [N, 4]
    one = b.const(f"{tag}_ax1", [1], np.int64)
    asm = b.op("ReduceSum", [b.op("Mul", [p, p]), one], keepdims=1)
    logp = b.op("Log", [b.op("Max", [p, b.const(f"{tag}_tiny", 1e-12, broadcast=False)])])
    entropy = b.op("Neg", [b.op("ReduceSum", [b.op("Mul", [p, logp]), one], keepdims=1)])
    # correlation of the symmetric matrix: sum (i - mu)(j - mu) p / var, marginals equal
    i, j = np.divmod(np.arange(L * L), L)
    mu = b.op("Slice", [linear, b.const(f"{tag}_mu_s", [3], np.int64),
                        b.const(f"{tag}_mu_e", [4], np.int64), one])  # [N, 1]
    ii = b.const(f"{tag}_i", i.reshape(1, -1), broadcast=False)
    jj = b.const(f"{tag}_j", j.reshape(1, -1), broadcast=False)
    di, dj = b.op("Sub", [ii, mu]), b.op("Sub", [jj, mu])
    cov = b.op("ReduceSum", [b.op("Mul", [b.op("Mul", [di, dj]), p]), one], keepdims=1)
    var = b.op("ReduceSum", [b.op("Mul", [b.op("Mul", [di, di]), p]), one], keepdims=1)
    corr = b.op("Div", [cov, b.op("Max", [var, b.const(f"{tag}_veps", _EPS, broadcast=False)])])
    head = b.op("Slice", [linear, b.const(f"{tag}_h_s", [0], np.int64),
                          b.const(f"{tag}_h_e", [3], np.int64), one])  # contrast, diss., homog.
    return b.op("Concat", [head, asm, entropy, corr], axis=1)


def feature_nodes(mask: HsvMaskSpec, prefix: str = "feat/") -> tuple[list, list]:
    """(nodes, initializers) computing ``features`` from ``image`` (names get ``prefix``)."""
    from onnx import TensorProto

    b = Builder(prefix)
    unit = b.op("Mul", [INPUT, b.const("inv_255", 1.0 / 255.0)])
    hue, saturation, value = hsv_channels(b, unit)
    hsv = b.op("Concat", [hue, saturation, value], axis=3)  # [N, S, S, 3]
    mask_f = b.op("Cast", [stain_mask(b, hue, saturation, value, mask)], to=TensorProto.FLOAT)
    colour_f = b.op("Cast", [stain_colour(b, hue, saturation)], to=TensorProto.FLOAT)
    parts = [_flat(b, _histogram(b, hsv, HSV_BINS, None, "hist"), "hist"),
             _flat(b, _histogram(b, hsv, HSV_BINS, mask_f, "mhist"), "mhist")]
    parts += _colour(b, hsv, mask_f)
    area_axes = b.const("area_axes", [1, 2], np.int64)
    parts += [b.op("ReduceMean", [mask_f, area_axes], keepdims=0),
              b.op("ReduceMean", [colour_f, area_axes], keepdims=0)]
    grey = b.op("MatMul", [unit, b.const("luma", np.reshape(LUMA, (3, 1)), broadcast=False)])
    grey_nchw = b.op("Transpose", [grey], perm=[0, 3, 1, 2])
    parts += _gradients(b, grey_nchw)
    levels = b.op("Cast", [b.op("Clip", [b.op("Floor", [b.op("Mul", [
        b.op("Squeeze", [grey, b.const("grey_axis", [3], np.int64)]),
        b.const("levels", float(GLCM_LEVELS), broadcast=False)])]),
        b.const("lv_lo", 0.0, broadcast=False), b.const("lv_hi", GLCM_LEVELS - 1.0,
                                                        broadcast=False)])],
        to=TensorProto.INT64)  # [N, S, S]
    parts += [_glcm(b, levels, d) for d in GLCM_DISTANCES]
    b.op("Concat", parts, axis=1, output=OUTPUT)
    return b.nodes, b.inits


def features_model(mask: HsvMaskSpec, size: tuple[int, int], ir_version: int | None = None
                   ) -> Any:
    """The feature graph alone: ``image`` float32 [N, h, w, 3] on 0-255 -> ``features``."""
    from onnx import TensorProto, helper

    nodes, inits = feature_nodes(mask, prefix="feat/")
    h, w = size
    graph = helper.make_graph(
        nodes, "leukedge_features",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", h, w, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", N_FEATURES])], inits)
    return checked_model(graph, ir_version)
