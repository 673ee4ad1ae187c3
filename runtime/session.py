"""The one door to ONNX Runtime: every ``InferenceSession`` in leukedge is made by :func:`create_session`.

It checks the requested providers against what is installed, keeps CPU last as the fallback,
sets threads explicitly, and after creation compares ``session.get_providers()`` with the request:
onnxruntime-gpu without a working CUDA/cuDNN logs an error and silently runs on CPU
(measured with onnxruntime-gpu 1.31 on a machine without a GPU), so only that comparison tells the truth. A fallback is a warning under
``provider="auto"`` and an error when CUDA was asked for explicitly. OpenVINO
(onnxruntime-openvino) is only ever asked for explicitly, with a device (``openvino:GPU``), so
its fallback is always an error: onnxruntime-openvino 1.24 asked for a GPU that is not there
logs "Device GPU is not available" and runs the session on the CPU provider.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import LeukedgeError

log = logging.getLogger(__name__)

OPENVINO_DEVICES = ("CPU", "GPU", "NPU")
PROVIDER_CHOICES = ("auto", "cuda", "cpu", "openvino",
                    *(f"openvino:{d}" for d in OPENVINO_DEVICES))
_ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_OPENVINO = "OpenVINOExecutionProvider"


class RuntimeSetupError(LeukedgeError, RuntimeError):
    """ONNX Runtime is missing, installed twice, or cannot give the requested provider."""


class ProviderFallbackWarning(UserWarning):
    """The session runs on another provider than the one asked for."""


def installed_ort_packages() -> list[str]:
    """Which ONNX Runtime distributions pip has installed (each provides ``import onnxruntime``)."""
    from importlib import metadata  # here: `leukedge --help` reads this module's choices

    found = []
    for name in _ORT_PACKAGES:
        try:
            metadata.version(name)
            found.append(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def load_onnxruntime() -> Any:
    """Import onnxruntime, or explain which extra to install."""
    packages = installed_ort_packages()
    if len(packages) > 1:
        warnings.warn(
            f"{' and '.join(packages)} are installed; they write the same `onnxruntime` module "
            "and the last one installed wins. Keep one: `pip uninstall -y "
            f"{' '.join(_ORT_PACKAGES)}` then `pip install 'leukedge[cpu]'` (or [gpu], "
            "[openvino]).",
            RuntimeWarning, stacklevel=2)
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise RuntimeSetupError(
            "ONNX Runtime is not installed. Install one of: `pip install 'leukedge[cpu]'` "
            "(onnxruntime) or `pip install 'leukedge[gpu]'` (onnxruntime-gpu, needs CUDA 12/13 "
            "and cuDNN 9); never both.") from e
    return ort


@dataclass(frozen=True)
class SessionInfo:
    """What a session asked for and what it got."""

    requested: str
    providers: tuple[str, ...]
    intra_op_threads: int
    inter_op_threads: int
    fell_back: bool
    device: str = ""  # the OpenVINO device ("CPU", "GPU", "NPU") when OpenVINO runs it

    @property
    def provider(self) -> str:
        """The provider that runs the model: 'cuda', 'cpu' or 'openvino:<device>'."""
        first = self.providers[0] if self.providers else _CPU
        if first == _OPENVINO:
            return f"openvino:{self.device}"
        return "cuda" if first == _CUDA else "cpu"


def usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware: a container or `taskset` may allow fewer)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Intra-op threads: the CPUs this process may use, at most 8."""
    return max(1, min(usable_cpus(), 8))


MAX_THREADS = 256


def check_threads(threads: Optional[int]) -> None:
    """Refuse a thread count ONNX Runtime cannot honour (100,000 threads hang the process)."""
    if threads is not None and not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"--threads must be between 1 and {MAX_THREADS} (this machine has "
                         f"{usable_cpus()} usable CPUs), got {threads}")


def openvino_device(provider: str) -> Optional[str]:
    """The OpenVINO device a provider choice names: 'openvino' and 'openvino:CPU' -> 'CPU',
    'openvino:GPU' -> 'GPU'; None for the other providers."""
    name, _, device = provider.partition(":")
    if name.lower() != "openvino":
        return None
    return device.upper() or "CPU"


def openvino_devices(ort: Any) -> list[str]:
    """The devices OpenVINO sees here ('CPU', 'GPU.0', 'NPU'...); [] without onnxruntime-openvino."""
    if _OPENVINO not in ort.get_available_providers():
        return []
    listing = getattr(ort.capi._pybind_state, "get_available_openvino_device_ids", None)
    return list(listing()) if listing is not None else []


def _check_provider(provider: str) -> None:
    device = openvino_device(provider)
    if provider not in PROVIDER_CHOICES and (device is None or device not in OPENVINO_DEVICES):
        raise ValueError(f"Unknown provider {provider!r}. Valid: {', '.join(PROVIDER_CHOICES)}")


def _resolve_openvino(ort: Any, provider: str, device: str, threads: int) -> list:
    available = ort.get_available_providers()
    if _OPENVINO not in available:
        raise RuntimeSetupError(
            f"provider {provider!r} was requested but this onnxruntime has no "
            f"OpenVINOExecutionProvider (available: {', '.join(available)}). Install "
            "`leukedge[openvino]` (onnxruntime-openvino) in place of onnxruntime: `pip uninstall "
            f"-y {' '.join(_ORT_PACKAGES)}` then `pip install 'leukedge[openvino]'`.")
    devices = openvino_devices(ort)
    if devices and not any(d.split(".")[0] == device for d in devices):
        raise RuntimeSetupError(
            f"provider {provider!r} was requested but OpenVINO sees no {device} on this PC "
            f"(devices: {', '.join(devices)}); for an Intel GPU or NPU install its driver "
            "(see `leukedge doctor`).")
    options = {"device_type": device}
    if device == "CPU":  # OpenVINO runs its part of the graph on its own threads: as many
        options["num_of_threads"] = str(threads)
    return [(_OPENVINO, options), _CPU]


def _resolve_providers(ort: Any, provider: str, threads: int = 1) -> list:
    _check_provider(provider)
    device = openvino_device(provider)
    if device is not None:
        return _resolve_openvino(ort, provider, device, threads)
    available = ort.get_available_providers()
    if provider == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if provider == "cuda":
        raise RuntimeSetupError(
            "provider 'cuda' was requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}). Install `leukedge[gpu]` (onnxruntime-gpu) "
            "and uninstall the CPU `onnxruntime` package.")
    return [_CPU]


def _load_error(source: str, provider: str, e: Exception) -> RuntimeSetupError:
    """ONNX Runtime's error in one line; OpenVINO's compiler errors are C++ traces whose useful
    part is the last line and the node it names."""
    text = str(e).strip()
    device = openvino_device(provider)
    if device is None or "OpenVINO" not in text:
        first = text.splitlines()[0][:400] if text else type(e).__name__
        return RuntimeSetupError(f"{source}: ONNX Runtime cannot load this model: {first}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    node = next((m.group(1) for line in lines
                 if (m := re.search(r"node: \S+ (\S+)", line))), None)
    at = f" (at node {node})" if node else ""
    return RuntimeSetupError(f"{source}: OpenVINO cannot compile this model for {device}: "
                             f"{lines[-1][:300]}{at}. `leukedge doctor` shows which bundled "
                             "models OpenVINO runs here; --provider cpu runs every model.")


_OPTIMIZATION_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED",
                        "basic": "ORT_ENABLE_BASIC", "disable": "ORT_DISABLE_ALL"}


def _session_options(ort: Any, threads: int, spin: bool, optimization: str) -> Any:
    """Explicit threads, no spinning unless asked, the requested graph optimization level."""
    if optimization not in _OPTIMIZATION_LEVELS:
        raise ValueError(f"Unknown optimization {optimization!r}. "
                         f"Valid: {', '.join(_OPTIMIZATION_LEVELS)}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            _OPTIMIZATION_LEVELS[optimization])
    spin_flag = "1" if spin else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin_flag)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin_flag)
    opts.log_severity_level = 3  # errors only; a fallback is reported by create_session
    return opts


def create_session(
    model: str | os.PathLike | bytes,
    provider: str = "auto",
    threads: Optional[int] = None,
    spin: bool = False,
    optimization: str = "all",
) -> tuple[Any, SessionInfo]:
    """Create an ``onnxruntime.InferenceSession`` the leukedge way.

    Args:
        model: path to an ONNX file, or its bytes.
        provider: "auto" (CUDA when onnxruntime-gpu has a working GPU, else CPU), "cuda"
            (fail unless CUDA really runs the model), "cpu", or "openvino:<device>" with
            device CPU, GPU or NPU ("openvino" = "openvino:CPU"; onnxruntime-openvino; fail
            unless OpenVINO really runs the model there).
        threads: intra-op threads; None = :func:`default_threads`.
        spin: let idle worker threads busy-wait. Off by default: on a 2-4 core microscope PC
            shared with the camera software, spinning burns a core for little latency gain.
        optimization: "all", "extended", "basic" or "disable" (ORT graph optimization level).

    Returns:
        (session, SessionInfo).

    Example:
        >>> session, info = create_session("model.onnx", provider="auto")
        >>> info.provider
        'cpu'
    """
    ort = load_onnxruntime()
    check_threads(threads)
    n_threads = threads or default_threads()
    requested = _resolve_providers(ort, provider, n_threads)
    opts = _session_options(ort, n_threads, spin, optimization)
    if openvino_device(provider) is not None:  # its C++ trace: _load_error says it in one line
        opts.log_severity_level = 4

    source = "<bytes>" if isinstance(model, (bytes, bytearray)) else str(model)
    if not isinstance(model, (bytes, bytearray)):
        if not Path(model).is_file():
            raise FileNotFoundError(f"{source}: model file not found")
        model = str(model)
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=requested)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise _load_error(source, provider, e) from e

    got = tuple(session.get_providers())
    asked = requested[0][0] if isinstance(requested[0], tuple) else requested[0]
    fell_back = asked != _CPU and got[0] != asked
    device = openvino_device(provider) or ""
    info = SessionInfo(requested=provider, providers=got, intra_op_threads=n_threads,
                       inter_op_threads=1, fell_back=fell_back,
                       device=device if got[0] == _OPENVINO else "")
    if fell_back:
        _report_fallback(source, provider, got)
    return session, info


def _report_fallback(source: str, provider: str, got: tuple[str, ...]) -> None:
    """An error for an explicit request (cuda, openvino), a warning under auto."""
    if openvino_device(provider) is not None:
        raise RuntimeSetupError(
            f"{source}: OpenVINO on {openvino_device(provider)} was requested but ONNX Runtime "
            f"is running on {got[0]} (OpenVINO could not open the device; `leukedge doctor` "
            "lists the devices it sees).")
    msg = (f"{source}: CUDA was requested but ONNX Runtime is running on {got[0]} "
           "(no GPU answered, or the CUDA/cuDNN 9 libraries that this onnxruntime-gpu build "
           "was made for are missing).")
    if provider == "cuda":
        raise RuntimeSetupError(msg)
    warnings.warn(msg + " Falling back to CPU.", ProviderFallbackWarning, stacklevel=3)


def open_for_metadata(model: str | os.PathLike) -> Any:
    """A CPU session with graph optimizations off, for reading a model's metadata and I/O.

    Raises:
        FileNotFoundError: no such file.
        RuntimeSetupError: ONNX Runtime is missing or cannot load the file.
    """
    session, _ = create_session(model, provider="cpu", threads=1, optimization="disable")
    return session
