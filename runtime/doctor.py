"""What this PC will do and why (``leukedge doctor``): versions, ONNX Runtime wheels and
providers, the CPU's INT8 features and which file ``default`` means here, the bundled models
against their recorded sha256, and whether the folders leukedge writes to are writable.

Each check is a :class:`Check`: ``ok`` (fine), ``warn`` (works, but read this) or ``fail``
(something is wrong: the command exits 1). Nothing here changes the machine.

Example:
    >>> [c.to_dict() for c in run_checks(Path("."))]
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

from .contract import leukedge_version
from .cpu import cpu_flags, has_int8_vnni
from .files import sha256_file
from .models import AVX2_VARIANT, MODELS_DIR, bundled_models, resolve_model

ORT_WHEELS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
              "onnxruntime-silicon", "onnxruntime-qnn")
SHA256SUMS = MODELS_DIR / "SHA256SUMS"  # written when the bundled models are built


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _installed(name: str) -> Optional[str]:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_versions() -> list[Check]:
    wheels = {w: v for w in ORT_WHEELS if (v := _installed(w))}
    out = [Check("python", "ok", f"{platform.python_version()} ({platform.platform()})"),
           Check("leukedge", "ok", leukedge_version())]
    if not wheels:
        out.append(Check("onnxruntime", "fail", "no ONNX Runtime wheel installed: pip install "
                                                "'leukedge[cpu]' (or [gpu])"))
    elif len(wheels) > 1:
        out.append(Check("onnxruntime", "fail", "conflicting wheels installed: " + ", ".join(
            f"{w} {v}" for w, v in wheels.items()) + "; they write the same `onnxruntime` "
            "module: uninstall all and install one"))
    else:
        (wheel, v), = wheels.items()
        out.append(Check("onnxruntime", "ok", f"{wheel} {v}"))
    return out


def check_providers(model: Optional[Path]) -> list[Check]:
    """Each provider this ONNX Runtime offers that leukedge uses, and whether it really runs a
    model (a listed CUDA provider without a working GPU falls back to the CPU); with
    onnxruntime-openvino, the devices OpenVINO sees and whether each runs the model."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    from .session import openvino_devices

    available = ort.get_available_providers()
    out = [Check("providers", "ok", ", ".join(available))]
    choices = [c for n, c in (("CPUExecutionProvider", "cpu"), ("CUDAExecutionProvider", "cuda"))
               if n in available]
    if "OpenVINOExecutionProvider" in available:
        devices = openvino_devices(ort)
        out.append(Check("openvino devices", "ok" if devices else "warn",
                         ", ".join(devices) or "OpenVINO sees no device"))
        choices += sorted({f"openvino:{d.split('.')[0]}" for d in devices})
    if model is None:
        return out + [Check("provider start", "warn", "no bundled model to try a session with")]
    out += [_starts(model, choice, f"{choice} starts") for choice in choices]
    try:  # OpenVINO compiles the graph itself and may refuse a model the CPU provider runs
        default = resolve_model("default")
    except (OSError, ValueError):
        return out
    return out + [_starts(default, c, f"{c} runs default") for c in choices if ":" in c]


def _starts(model: Path, choice: str, name: str) -> Check:
    """Whether a session on ``choice`` opens ``model`` and really runs on that provider."""
    from .session import RuntimeSetupError, create_session

    try:
        _, info = create_session(model, provider=choice, threads=1)
    except (RuntimeSetupError, OSError, ValueError) as e:
        return Check(name, "warn", str(e))
    status = "warn" if info.fell_back else "ok"
    return Check(name, status, f"{model.name} runs on {', '.join(info.providers)}")


def check_cpu() -> list[Check]:
    flags = cpu_flags()
    vnni = has_int8_vnni()
    seen = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
                     if flags and f in flags) or "unknown (no /proc/cpuinfo)"
    try:
        default = resolve_model("default").name
    except (OSError, ValueError) as e:
        return [Check("cpu", "ok", seen), Check("default model", "fail", str(e))]
    return [Check("cpu", "ok", f"{platform.machine()}: {seen}"),
            Check("default model", "ok", f"{default}: {_why(default, vnni)}")]


def _why(file_name: str, vnni: Optional[bool]) -> str:
    """Why ``default`` means this file here (:func:`~leukedge.runtime.models.best_variant`)."""
    if file_name.endswith(f"-{AVX2_VARIANT}.onnx"):
        return "INT8 made for CPUs without VNNI (7-bit weights where INT8 could saturate)"
    if file_name.endswith("-int8.onnx"):
        return "INT8 (this CPU has VNNI)" if vnni else "INT8 (the only file bundled)"
    return {True: "FP32 (no INT8 file bundled)",
            False: "FP32 (no VNNI, and no INT8 file for such CPUs bundled)",
            None: "FP32 (INT8 exactness unknown on this CPU)"}[vnni]


def check_bundled_models() -> list[Check]:
    """Every bundled file against the sha256 recorded when it was built (SHA256SUMS)."""
    if not SHA256SUMS.is_file():
        return [Check("bundled models", "warn", f"no record of their sha256 ({SHA256SUMS})")]
    recorded = {}
    for line in SHA256SUMS.read_text().splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            recorded[name.strip()] = digest.strip()
    out = []
    for name, path in sorted(bundled_models().items()):
        want = recorded.get(path.name)
        got = sha256_file(path)
        if want is None:
            out.append(Check(f"model {name}", "warn", f"{path.name} is not in SHA256SUMS"))
        elif got != want:
            out.append(Check(f"model {name}", "fail", f"{path} was modified: sha256 {got[:16]}"
                                                      f"... , recorded {want[:16]}...; "
                                                      "reinstall leukedge"))
        else:
            out.append(Check(f"model {name}", "ok", f"sha256 {got[:12]}..., as recorded"))
    missing = sorted(set(recorded) - {p.name for p in bundled_models().values()})
    out += [Check(f"model {m}", "fail", f"{m} is missing from {MODELS_DIR}") for m in missing]
    return out


def check_writable(folders: dict[str, Path]) -> list[Check]:
    out = []
    for what, folder in folders.items():
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".leukedge-doctor-"):
                pass
            out.append(Check(f"{what} writable", "ok", str(folder)))
        except OSError as e:
            out.append(Check(f"{what} writable", "fail", f"{folder}: {e.strerror or e}"))
    return out


def run_checks(output_dir: Path) -> list[Check]:
    """All checks, in reading order."""
    models = bundled_models()
    try_model = models.get("fast-fp32") or next(iter(models.values()), None)
    return (check_versions() + check_providers(try_model) + check_cpu()
            + check_bundled_models()
            + check_writable({"output folder": output_dir,
                              "temp folder": Path(tempfile.gettempdir())}))
