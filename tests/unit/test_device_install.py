"""Install checks per device profile, unsupported devices, and the README's install table.

Every shipped profile is either installable with the commands the README shows (the same lines
as its `install` list, checked here) or marked `supported = false` and named in the README's
list of unsupported devices.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgead.devices import load_all_profiles, load_profile, profile_export_settings
from edgead.devices.install import (
    check_install,
    jetpack_from_l4t,
    parse_spec,
    satisfies,
)
from edgead.devices.profiles import profile_from_dict
from edgead.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"

JETSON_OK = {
    "python": "3.10.12",
    "jetpack": "6 (L4T R36.4.3)",
    "tensorrt": "10.3.0",
    "cuda": "12.6",
    "cuda_python": "12.6.2.post1",
    "onnxruntime": "1.20.0",
}


@pytest.mark.parametrize(
    "version, spec, expected",
    [
        ("12.6.2.post1", ">=12,<13", True),
        ("13.0.0", ">=12,<13", False),
        ("10.3.0", ">=10", True),
        ("8.5.2", ">=10", False),
        ("3.10.12", ">=3.10", True),
        ("3.8.10", ">=3.10", False),
        ("2024.4.0-16579", ">=2024.0", True),
        ("6 (L4T R36.4.3)", ">=6", True),
        ("unknown", ">=1", False),
    ],
)
def test_satisfies(version: str, spec: str, expected: bool) -> None:
    assert satisfies(version, spec) is expected


def test_bad_spec_is_refused_and_named() -> None:
    with pytest.raises(ConfigError, match="'~=10'"):
        parse_spec("~=10")
    bad = {
        "name": "x",
        "description": "d",
        "target": "onnx",
        "precision": "fp32",
        "threads": 1,
        "image_size": 224,
        "memory_budget_mib": 512,
        "sources": ["doc - https://example.org"],
        "backends": [{"backend": "onnxruntime", "provider": "CPUExecutionProvider"}],
        "install": ["pip install edgead"],
        "requires": {"cuda": "12"},
    }
    with pytest.raises(ConfigError, match="not OP VERSION"):
        profile_from_dict(bad)
    bad["requires"] = {"torch": ">=2"}
    with pytest.raises(ConfigError, match="unknown requirement.*torch"):
        profile_from_dict(bad)
    bad["requires"] = {}
    bad.pop("install")
    with pytest.raises(ConfigError, match="no install commands"):
        profile_from_dict(bad)


def test_jetpack_from_nv_tegra_release() -> None:
    text = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64"
    assert jetpack_from_l4t(text) == "6 (L4T R36.4.3)"
    assert jetpack_from_l4t("# R35 (release), REVISION: 5.0").startswith("5 ")
    assert jetpack_from_l4t("not a release file") is None


def test_orin_install_check_passes_on_jetpack6_and_names_fixes_on_jetpack5() -> None:
    orin = load_profile("jetson-orin-nano")
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    checks = check_install(orin, JETSON_OK, providers)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    jp5 = {**JETSON_OK, "python": "3.8.10", "jetpack": "5 (L4T R35.5.0)", "tensorrt": "8.5.2"}
    jp5.update(cuda="11.4", cuda_python=None)
    failed = {c.component: c for c in check_install(orin, jp5, ("CPUExecutionProvider",))}
    assert {"python", "jetpack", "tensorrt", "cuda", "cuda_python"} <= {
        k for k, c in failed.items() if not c.ok
    }
    assert "JetPack 6" in failed["jetpack"].hint and "3.10" in failed["python"].hint
    assert failed["cuda_python"].found is None and "cuda-python" in failed["cuda_python"].hint
    assert not failed["onnxruntime TensorrtExecutionProvider"].ok
    assert "onnxruntime-gpu" in failed["onnxruntime TensorrtExecutionProvider"].hint


def test_intel_gpu_check_names_the_driver() -> None:
    igpu = load_profile("intel-igpu")
    versions = {"python": "3.11.7", "onnxruntime": "1.20.0", "openvino": "2024.4.0"}
    checks = {
        c.component: c for c in check_install(igpu, versions, ("CPUExecutionProvider",), ("CPU",))
    }
    assert checks["openvino CPU"].ok and not checks["openvino GPU"].ok
    assert "intel-opencl-icd" in checks["openvino GPU"].hint


def test_xavier_nx_is_marked_unsupported_and_export_refuses_it() -> None:
    xavier = load_profile("jetson-xavier-nx")
    assert xavier.supported is False and "JetPack 5" in xavier.notes
    with pytest.raises(ConfigError, match="jetson-xavier-nx' is not supported.*Python 3.8"):
        profile_export_settings("jetson-xavier-nx")
    (first, *_) = check_install(xavier, JETSON_OK)
    assert first.component == "device" and first.ok is False


def _readme_install_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Install on a device")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_readme_shows_every_profile_install_or_says_unsupported() -> None:
    section = _readme_install_section()
    for profile in load_all_profiles():
        if profile.supported:
            assert f"`{profile.name}`" in section, profile.name
            for line in profile.install:
                command = line.split("   #")[0].strip()  # the README may drop trailing comments
                if command.startswith("#"):  # a note, not a command (the README says it in prose)
                    continue
                assert f"`{command}`" in section, (profile.name, command)
        else:
            assert re.search(rf"{re.escape(profile.name)}.*not supported", section), profile.name


def test_cli_devices_reports_install_check() -> None:
    from edgead.cli.main import app

    result = CliRunner().invoke(app, ["devices", "--json", "--profile", "jetson-orin-nano"])
    assert result.exit_code == 0, result.output
    checks = {c["component"]: c for c in json.loads(result.stdout)["install_check"]}
    assert checks["python"]["ok"] is True and checks["jetpack"]["ok"] is False
    text = CliRunner().invoke(app, ["devices", "--profile", "jetson-xavier-nx"])
    assert text.exit_code == 0 and "not supported" in text.output
