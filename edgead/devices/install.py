"""Does this machine's install meet a device profile's needs? Versions checked, fixes named.

`installed_versions()` reads what it can without side effects: Python, ONNX Runtime (and its
execution providers), OpenVINO, TensorRT, cuda-python, the CUDA runtime (through cuda-python,
else /usr/local/cuda/version.json) and, on Jetson, the JetPack major version from
/etc/nv_tegra_release (L4T R36 = JetPack 6, R35 = JetPack 5). `check_install(profile, ...)`
compares them with the profile's `[requires]` table and its backends (ONNX Runtime providers,
OpenVINO devices) and says, per component, what to install. Torch-free, imports lazily.
"""

from __future__ import annotations

import json
import logging
import platform
import re
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgead.devices.profiles import DeviceProfile, parse_spec, version_tuple

logger = logging.getLogger(__name__)

#: L4T major release -> JetPack major version (NVIDIA's JetPack archive)
_L4T_TO_JETPACK = {39: "7", 38: "7", 36: "6", 35: "5", 34: "5", 32: "4"}
_HINTS = {
    "python": "edgead needs Python >= 3.10 (Jetson: JetPack 6 ships 3.10; JetPack 5 cannot)",
    "onnxruntime": "pip install onnxruntime (Jetson: onnxruntime-gpu from the Jetson wheel "
    "index, see the README's install table)",
    "openvino": "pip install 'edgead[openvino]'",
    "tensorrt": "x86: pip install 'edgead[tensorrt]'; Jetson: TensorRT comes with JetPack 6 "
    "(sudo apt install nvidia-jetpack; use a venv with --system-site-packages)",
    "cuda_python": "pip install 'cuda-python>=12,<13' (match the CUDA major version)",
    "cuda": "install the NVIDIA driver and CUDA 12 (Jetson: JetPack 6)",
    "jetpack": "flash JetPack 6 (Jetson Orin); older JetPacks cannot run edgead",
}
_PROVIDER_HINTS = {
    "TensorrtExecutionProvider": "onnxruntime-gpu built with TensorRT (x86: pip uninstall "
    "onnxruntime && pip install onnxruntime-gpu; Jetson: the Jetson wheel index)",
    "CUDAExecutionProvider": "onnxruntime-gpu (x86: pip uninstall onnxruntime && pip install "
    "onnxruntime-gpu; Jetson: the Jetson wheel index)",
}
_OPENVINO_DEVICE_HINTS = {
    "GPU": "the Intel GPU compute runtime (Ubuntu: sudo apt install intel-opencl-icd)",
    "NPU": "the Intel NPU driver (github.com/intel/linux-npu-driver releases)",
}


@dataclass(frozen=True)
class InstallCheck:
    """One component: what the profile needs, what is here, and what to do.

    ok is None when it cannot be told here (e.g. a GPU provider on a machine without the GPU).
    """

    component: str
    needed: str
    found: str | None
    ok: bool | None
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def satisfies(version: str, spec: str) -> bool:
    """True when `version` meets every clause of `spec` (compared on the given parts only:
    '12.6.1' == '12.6' holds, so ">=12" accepts '12.0.1')."""
    have = version_tuple(version)
    if not have:
        return False
    for op, want in parse_spec(spec):
        mine = have[: len(want)] + (0,) * max(0, len(want) - len(have))
        ok = {
            ">=": mine >= want,
            "<=": mine <= want,
            "==": mine == want,
            "<": mine < want,
            ">": mine > want,
        }[op]
        if not ok:
            return False
    return True


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _module_version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not hidden
        logger.warning("importing %s failed: %s", module, exc)
        return None
    return str(getattr(mod, "__version__", "") or "") or None


def _cuda_runtime_version() -> str | None:
    """'12.6' from cuda-python's cudaRuntimeGetVersion, else /usr/local/cuda/version.json."""
    try:
        from edgead.runtime.backends.tensorrt import import_cudart

        err, value = import_cudart().cudaRuntimeGetVersion()
        if int(err) == 0:
            return f"{int(value) // 1000}.{int(value) % 1000 // 10}"
    except Exception as exc:  # noqa: BLE001 - absent or broken: fall through to the file
        logger.debug("cudaRuntimeGetVersion unavailable: %s", exc)
    path = Path("/usr/local/cuda/version.json")
    try:
        return str(json.loads(path.read_text())["cuda"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def jetpack_from_l4t(text: str) -> str | None:
    """'6 (L4T R36.4.0)' from /etc/nv_tegra_release text ('# R36 (release), REVISION: 4.0')."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if match is None:
        return None
    major = int(match.group(1))
    jetpack = _L4T_TO_JETPACK.get(major, "?")
    return f"{jetpack} (L4T R{major}.{match.group(2)})"


def installed_versions() -> dict[str, str | None]:
    """Versions of the components a profile may require (None = absent)."""
    try:
        l4t = Path("/etc/nv_tegra_release").read_text(errors="replace")
    except OSError:
        l4t = ""
    return {
        "python": platform.python_version(),
        "onnxruntime": _module_version("onnxruntime"),
        "openvino": _dist_version("openvino"),
        "tensorrt": _module_version("tensorrt"),
        "cuda_python": _dist_version("cuda-python", "cuda-bindings"),
        "cuda": _cuda_runtime_version(),
        "jetpack": jetpack_from_l4t(l4t) if l4t else None,
    }


def check_install(
    profile: DeviceProfile,
    versions: dict[str, str | None],
    ort_providers: tuple[str, ...] = (),
    openvino_devices: tuple[str, ...] = (),
) -> list[InstallCheck]:
    """One InstallCheck per requirement of `profile` and per backend it prefers.

    Args:
        profile: the device profile.
        versions: `installed_versions()` (or a test's dict).
        ort_providers: onnxruntime.get_available_providers() here.
        openvino_devices: OpenVINO devices found here.
    """
    checks: list[InstallCheck] = []
    if not profile.supported:
        checks.append(
            InstallCheck("device", "a supported device", profile.name, False, profile.notes)
        )
    for component, spec in profile.requires.items():
        found = versions.get(component)
        ok = found is not None and satisfies(found, spec)
        checks.append(
            InstallCheck(component, spec, found, ok, "" if ok else _HINTS.get(component, ""))
        )
    for pref in profile.backends:
        if pref.backend == "onnxruntime" and pref.provider:
            ok = pref.provider in ort_providers
            hint = "" if ok else _PROVIDER_HINTS.get(pref.provider, "pip install onnxruntime")
            checks.append(
                InstallCheck(
                    f"onnxruntime {pref.provider}",
                    "available",
                    "available" if ok else "absent",
                    ok,
                    hint,
                )
            )
        elif pref.backend == "openvino" and pref.device:
            ok = pref.device in openvino_devices
            hint = "" if ok else _OPENVINO_DEVICE_HINTS.get(pref.device, _HINTS["openvino"])
            if not ok and versions.get("openvino") is None:
                hint = _HINTS["openvino"]
            checks.append(
                InstallCheck(
                    f"openvino {pref.device}",
                    "device present",
                    "present" if ok else "absent",
                    ok,
                    hint,
                )
            )
    return checks
