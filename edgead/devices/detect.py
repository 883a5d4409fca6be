"""Describe the machine we run on and say which backends work here (torch-free).

`detect_machine()` reads /proc/cpuinfo, /proc/meminfo, /proc/device-tree/model (Jetson,
Raspberry Pi), `nvidia-smi` and the installed ONNX Runtime / OpenVINO / TensorRT; `match_profile`
picks the shipped device profile that fits; `probe_backends` really creates a tiny session on each
backend (a one-node ONNX graph embedded below), because "installed" is not "works": ONNX Runtime,
for one, silently falls back to the CPU when a provider fails to start.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgead.devices.profiles import DeviceProfile, load_all_profiles

logger = logging.getLogger(__name__)

# ONNX graph y = Relu(x), x/y float32 (1, 4), opset 13, IR version 8 (made with onnx.helper once).
_PROBE_ONNX = base64.b64decode(
    "CAgSBmVkZ2VhZDo/CgwKAXgSAXkiBFJlbHUSBXByb2JlWhMKAXgSDgoMCAESCAoCCAEKAggEYhMKAXkSDgoMCAESCAoCCAEKAggEQgQKABAN"
)
_PROBE_INPUT = np.array([[-1.0, 2.0, -3.0, 4.0]], dtype=np.float32)
_PROBE_EXPECTED = np.maximum(_PROBE_INPUT, 0.0)
# CPU flags worth reporting (x86: vector/matrix extensions; Arm: SIMD, fp16, dot product).
_INTERESTING_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "fphp",
    "sve",
    "i8mm",
    "bf16",
)
# ORT providers that are not a local compute device (skipped by the probe, reported as such).
_NOT_LOCAL_PROVIDERS = ("AzureExecutionProvider",)


@dataclass(frozen=True, kw_only=True)
class MachineInfo:
    """What `edgead devices` knows about this machine (all fields JSON-ready)."""

    system: str
    arch: str  # platform.machine(), e.g. "x86_64", "aarch64"
    cpu_model: str
    cpu_vendor: str  # e.g. "GenuineIntel", "AuthenticAMD", "" on Arm
    cpu_flags: tuple[str, ...]  # the subset of _INTERESTING_FLAGS present
    logical_cores: int
    usable_cores: int  # cores this process may run on (sched_getaffinity)
    memory_total_mib: int
    device_tree_model: str  # "" when /proc/device-tree/model is absent
    cuda_gpus: tuple[str, ...]  # "name, memory" from nvidia-smi; ("tegra (integrated)",) on Jetson
    ort_version: str | None
    ort_providers: tuple[str, ...]
    openvino_version: str | None
    openvino_devices: dict[str, str] = field(default_factory=dict)  # device -> full name
    tensorrt_version: str | None = None

    @property
    def has_cuda(self) -> bool:
        """True when a CUDA GPU (discrete or Jetson's integrated one) was found."""
        return bool(self.cuda_gpus)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["cpu_flags"] = list(self.cpu_flags)
        data["cuda_gpus"] = list(self.cuda_gpus)
        data["ort_providers"] = list(self.ort_providers)
        return data


@dataclass(frozen=True, kw_only=True)
class BackendProbe:
    """Outcome of creating a session on one backend: works or not, and why."""

    label: str  # e.g. "onnxruntime/CUDAExecutionProvider", "openvino/GPU", "tensorrt"
    works: bool
    detail: str  # version / device name when it works, the error when it does not
    init_ms: float | None = None


def parse_cpuinfo(text: str) -> tuple[str, str, tuple[str, ...]]:
    """(model, vendor, interesting flags) from /proc/cpuinfo text (x86 and Arm layouts)."""
    model = vendor = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, vendor, tuple(f for f in _INTERESTING_FLAGS if f in flags)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _memory_total_mib() -> int:
    for line in _read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def _cuda_gpus(device_tree_model: str) -> tuple[str, ...]:
    """GPU names from nvidia-smi, or the Jetson's integrated GPU recognised from the device tree."""
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run(
                [exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            gpus = tuple(line.strip() for line in out.splitlines() if line.strip())
            if gpus:
                return gpus
        except (OSError, subprocess.SubprocessError) as exc:
            logger.info("nvidia-smi is present but failed (%s); assuming no discrete CUDA GPU", exc)
    if "jetson" in device_tree_model.lower() or Path("/etc/nv_tegra_release").exists():
        return ("tegra (integrated)",)
    return ()


def _onnxruntime_info() -> tuple[str | None, tuple[str, ...]]:
    try:
        import onnxruntime as ort
    except ImportError:
        return None, ()
    return ort.__version__, tuple(ort.get_available_providers())


def _openvino_info() -> tuple[str | None, dict[str, str]]:
    try:
        import openvino as ov
    except ImportError:
        return None, {}
    core = ov.Core()
    devices: dict[str, str] = {}
    for name in core.available_devices:
        try:
            devices[name] = str(core.get_property(name, "FULL_DEVICE_NAME"))
        except RuntimeError as exc:  # a device listed but not queryable: report, don't hide it
            devices[name] = f"(name unavailable: {exc})"
    return ov.get_version(), devices


def _tensorrt_version() -> str | None:
    try:
        import tensorrt as trt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(trt.__version__)


def detect_machine() -> MachineInfo:
    """Describe this machine: CPU, memory, device-tree model, CUDA GPUs, installed backends."""
    model, vendor, flags = parse_cpuinfo(_read_text("/proc/cpuinfo"))
    dt_model = _read_text("/proc/device-tree/model").replace("\x00", "").strip()
    ort_version, providers = _onnxruntime_info()
    ov_version, ov_devices = _openvino_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return MachineInfo(
        system=platform.system(),
        arch=platform.machine(),
        cpu_model=model or platform.processor() or "unknown",
        cpu_vendor=vendor,
        cpu_flags=flags,
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable,
        memory_total_mib=_memory_total_mib(),
        device_tree_model=dt_model,
        cuda_gpus=_cuda_gpus(dt_model),
        ort_version=ort_version,
        ort_providers=providers,
        openvino_version=ov_version,
        openvino_devices=ov_devices,
        tensorrt_version=_tensorrt_version(),
    )


def profile_matches(profile: DeviceProfile, info: MachineInfo) -> bool:
    """True when every condition in `profile.match` holds on `info`."""
    match = profile.match
    if match.arch and info.arch not in match.arch:
        return False
    if match.device_tree_model and not any(
        s.lower() in info.device_tree_model.lower() for s in match.device_tree_model
    ):
        return False
    if match.cpu_vendor and info.cpu_vendor not in match.cpu_vendor:
        return False
    if any(dev not in info.openvino_devices for dev in match.openvino_devices):
        return False
    return not (match.cuda and not info.has_cuda)


def match_profile(
    info: MachineInfo, profiles: Iterable[DeviceProfile] | None = None
) -> DeviceProfile | None:
    """The matching profile with the highest priority (ties: name order), or None."""
    candidates = [
        p
        for p in (profiles if profiles is not None else load_all_profiles())
        if profile_matches(p, info)
    ]
    if not candidates:
        return None
    return sorted(candidates, key=lambda p: (-p.match.priority, p.name))[0]


def _probe_onnxruntime(provider: str, options: dict[str, Any] | None = None) -> BackendProbe:
    label = f"onnxruntime/{provider}"
    import warnings

    import onnxruntime as ort

    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:  # ORT warns, then falls back
            warnings.simplefilter("always")
            session = ort.InferenceSession(_PROBE_ONNX, providers=[(provider, dict(options or {}))])
        used = session.get_providers()
        (output,) = session.run(None, {"x": _PROBE_INPUT})
    except Exception as exc:  # noqa: BLE001 - any failure means "does not work here"; reported
        return BackendProbe(label=label, works=False, detail=f"{type(exc).__name__}: {exc}")
    if caught and (not used or used[0] != provider):
        return BackendProbe(
            label=label, works=False, detail=f"{caught[0].message} (session fell back to {used})"
        )
    init_ms = (time.perf_counter() - start) * 1e3
    if not used or used[0] != provider:
        return BackendProbe(
            label=label,
            works=False,
            detail=f"session fell back to {used}; {provider} did not start",
        )
    if not np.allclose(output, _PROBE_EXPECTED):
        return BackendProbe(label=label, works=False, detail="probe graph gave a wrong result")
    return BackendProbe(
        label=label, works=True, detail=f"onnxruntime {ort.__version__}", init_ms=init_ms
    )


def _probe_openvino(device: str) -> BackendProbe:
    label = f"openvino/{device}"
    import io

    import openvino as ov

    start = time.perf_counter()
    try:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(io.BytesIO(_PROBE_ONNX)), device)
        output = compiled(_PROBE_INPUT)[0]
        name = str(core.get_property(device, "FULL_DEVICE_NAME"))
    except Exception as exc:  # noqa: BLE001 - reported as "does not work here"
        return BackendProbe(label=label, works=False, detail=f"{type(exc).__name__}: {exc}")
    init_ms = (time.perf_counter() - start) * 1e3
    if not np.allclose(output, _PROBE_EXPECTED):
        return BackendProbe(label=label, works=False, detail="probe graph gave a wrong result")
    return BackendProbe(
        label=label, works=True, detail=f"{name} (openvino {ov.get_version()})", init_ms=init_ms
    )


def _probe_tensorrt() -> BackendProbe:
    try:
        import tensorrt as trt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return BackendProbe(
            label="tensorrt",
            works=False,
            detail="tensorrt is not installed (pip install 'edgead[tensorrt]' "
            "or use JetPack's python3-libnvinfer)",
        )
    from edgead.runtime.backends.tensorrt import TRT_MAJOR_MIN

    major = str(trt.__version__).split(".")[0]
    if not major.isdigit() or int(major) < TRT_MAJOR_MIN:
        return BackendProbe(
            label="tensorrt",
            works=False,
            detail=f"tensorrt {trt.__version__} is installed; edgead needs TensorRT >= "
            f"{TRT_MAJOR_MIN} (JetPack 6 on Jetson)",
        )
    start = time.perf_counter()
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        fast_fp16 = bool(builder.platform_has_fast_fp16)
    except Exception as exc:  # noqa: BLE001 - reported
        return BackendProbe(label="tensorrt", works=False, detail=f"{type(exc).__name__}: {exc}")
    return BackendProbe(
        label="tensorrt",
        works=True,
        detail=f"tensorrt {trt.__version__}, fast fp16: {fast_fp16}",
        init_ms=(time.perf_counter() - start) * 1e3,
    )


def probe_backends(info: MachineInfo) -> list[BackendProbe]:
    """Try each installed backend/device once; one BackendProbe per ORT provider, OV device, TRT."""
    probes: list[BackendProbe] = []
    for provider in info.ort_providers:
        if provider in _NOT_LOCAL_PROVIDERS:
            probes.append(
                BackendProbe(
                    label=f"onnxruntime/{provider}",
                    works=False,
                    detail="remote provider, not a local device; skipped",
                )
            )
            continue
        probes.append(_probe_onnxruntime(provider))
    for device in info.openvino_devices:
        probes.append(_probe_openvino(device))
    if info.tensorrt_version is not None or info.has_cuda:
        probes.append(_probe_tensorrt())
    for probe in probes:
        logger.debug(
            "backend %s: %s (%s)", probe.label, "works" if probe.works else "fails", probe.detail
        )
    return probes


def first_working_backend(profile: DeviceProfile, probes: Iterable[BackendProbe]) -> str | None:
    """Label of the first backend in `profile`'s preference order that the probes found working."""
    working = {p.label for p in probes if p.works}
    for pref in profile.backends:
        if pref.label in working:
            return pref.label
    return None
