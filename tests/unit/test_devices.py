"""Device profiles, machine detection and `edgead devices`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgead.cli.main import app
from edgead.devices import (
    MachineInfo,
    list_profiles,
    load_all_profiles,
    load_profile,
    match_profile,
    probe_backends,
    profile_export_settings,
)
from edgead.devices.detect import _probe_onnxruntime, first_working_backend, parse_cpuinfo
from edgead.devices.profiles import profile_from_dict
from edgead.errors import ConfigError

EXPECTED = {
    "jetson-orin-nano",
    "jetson-agx-orin",
    "jetson-xavier-nx",
    "intel-core-cpu",
    "intel-igpu",
    "intel-npu",
    "raspberry-pi-5",
    "generic-x86-cpu",
    "generic-arm-cpu",
    "x86-nvidia-gpu",
}

MINIMAL = {
    "name": "x",
    "description": "d",
    "target": "onnx",
    "precision": "fp32",
    "threads": 2,
    "image_size": 224,
    "memory_budget_mib": 512,
    "sources": ["doc - https://example.org"],
    "match": {"arch": ["x86_64"]},
    "backends": [{"backend": "onnxruntime", "provider": "CPUExecutionProvider"}],
    "install": ["pip install edgead"],
}


def machine(**kw) -> MachineInfo:
    base = dict(
        system="Linux",
        arch="x86_64",
        cpu_model="cpu",
        cpu_vendor="AuthenticAMD",
        cpu_flags=(),
        logical_cores=4,
        usable_cores=4,
        memory_total_mib=8000,
        device_tree_model="",
        cuda_gpus=(),
        ort_version="1",
        ort_providers=(),
        openvino_version=None,
        openvino_devices={},
    )
    base.update(kw)
    return MachineInfo(**base)


def test_all_profiles_load_and_cite_sources() -> None:
    assert set(list_profiles()) == EXPECTED
    for profile in load_all_profiles():
        assert profile.sources and all("http" in s for s in profile.sources), profile.name
        assert profile.backends and profile.memory_budget_mib > 0
        for pref in profile.backends:
            if pref.backend == "onnxruntime":
                assert pref.provider and pref.provider.endswith("ExecutionProvider")


def test_jetson_profiles_enable_trt_fp16_and_engine_cache() -> None:
    for name in ("jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx"):
        trt = [b for b in load_profile(name).backends if b.provider == "TensorrtExecutionProvider"]
        assert trt and trt[0].options["trt_fp16_enable"] is True
        assert trt[0].options["trt_engine_cache_enable"] is True


def test_export_settings() -> None:
    assert profile_export_settings("jetson-orin-nano") == ("tensorrt", "fp16")
    assert profile_export_settings("intel-npu") == ("openvino", "fp16")
    assert profile_export_settings("intel-core-cpu") == ("openvino", "fp32")
    assert profile_export_settings("raspberry-pi-5") == ("onnx", "fp32")
    with pytest.raises(ConfigError, match="did you mean 'jetson-orin-nano'"):
        profile_export_settings("jetson-orin-nan")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["backends"][0].update(fp16=True), "fp16"),
        (lambda d: d["match"].update(gpu=True), "gpu"),
        (lambda d: d.update(target="tflite"), "tflite"),
        (lambda d: d.update(sources=[]), "cites no sources"),
        (lambda d: d["backends"][0].pop("provider"), "needs a provider"),
        (lambda d: d.update(threads="many"), "threads"),
    ],
)
def test_invalid_profiles_are_rejected(mutate, message) -> None:
    data = json.loads(json.dumps(MINIMAL))
    assert profile_from_dict(data).name == "x"
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        profile_from_dict(data, origin="x.toml")


@pytest.mark.parametrize(
    "info, expected",
    [
        (
            machine(
                arch="aarch64",
                device_tree_model="NVIDIA Jetson Orin Nano Developer Kit",
                cuda_gpus=("tegra (integrated)",),
            ),
            "jetson-orin-nano",
        ),
        (machine(arch="aarch64", device_tree_model="Jetson AGX Orin"), "jetson-agx-orin"),
        (
            machine(arch="aarch64", device_tree_model="NVIDIA Jetson Xavier NX Developer Kit"),
            "jetson-xavier-nx",
        ),
        (
            machine(arch="aarch64", device_tree_model="Raspberry Pi 5 Model B Rev 1.0"),
            "raspberry-pi-5",
        ),
        (machine(arch="aarch64", device_tree_model="Raspberry Pi 4 Model B"), "generic-arm-cpu"),
        (machine(cpu_vendor="GenuineIntel", openvino_devices={"CPU": "i7"}), "intel-core-cpu"),
        (
            machine(cpu_vendor="GenuineIntel", openvino_devices={"CPU": "a", "GPU": "b"}),
            "intel-igpu",
        ),
        (
            machine(
                cpu_vendor="GenuineIntel", openvino_devices={"CPU": "a", "GPU": "b", "NPU": "c"}
            ),
            "intel-npu",
        ),
        (machine(cpu_vendor="GenuineIntel"), "generic-x86-cpu"),  # no OpenVINO installed
        (machine(), "generic-x86-cpu"),
        (machine(cuda_gpus=("NVIDIA H200, 143771 MiB",)), "x86-nvidia-gpu"),
    ],
)
def test_match_profile(info: MachineInfo, expected: str) -> None:
    assert match_profile(info).name == expected


def test_no_profile_for_unknown_arch() -> None:
    assert match_profile(machine(arch="riscv64")) is None


def test_parse_cpuinfo_x86_and_arm() -> None:
    x86 = (
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7\n"
        "flags\t\t: fpu sse4_2 avx avx2 avx512f amx_tile\n"
    )
    assert parse_cpuinfo(x86) == (
        "Intel(R) Core(TM) i7",
        "GenuineIntel",
        ("sse4_2", "avx", "avx2", "avx512f", "amx_tile"),
    )
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimdhp asimddp\nCPU part\t: 0xd0b\n"
    model, vendor, flags = parse_cpuinfo(arm)
    assert (model, vendor, flags) == ("", "", ("asimd", "asimdhp", "asimddp"))


def test_probe_backends_here() -> None:
    import onnxruntime as ort

    info = machine(ort_providers=tuple(ort.get_available_providers()))
    probes = {p.label: p for p in probe_backends(info)}
    cpu = probes["onnxruntime/CPUExecutionProvider"]
    assert cpu.works and cpu.init_ms is not None
    assert (
        first_working_backend(load_profile("generic-x86-cpu"), probes.values())
        == "onnxruntime/CPUExecutionProvider"
    )
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        bogus = _probe_onnxruntime("CUDAExecutionProvider")
        assert not bogus.works and bogus.detail


def test_cli_devices_json_and_list() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["machine"]["logical_cores"] >= 1
    assert data["profile"]["name"] in EXPECTED
    assert any(b["works"] for b in data["backends"])
    listed = runner.invoke(app, ["devices", "--list", "--json"])
    assert {p["name"] for p in json.loads(listed.stdout)} == EXPECTED
    bad = runner.invoke(app, ["devices", "--profile", "nope"])
    assert bad.exit_code == 2


def test_run_device_option_accepts_profile_names() -> None:
    from edgead.cli.run import _resolve_device

    assert _resolve_device("auto", None, None) == ("auto", None, None)
    assert _resolve_device("jetson-orin-nano", None, None) == ("cuda", None, 6)
    assert _resolve_device("intel-npu", None, None) == ("npu", None, 4)
    assert _resolve_device("intel-igpu", None, 2) == ("gpu", None, 2)
    assert _resolve_device("raspberry-pi-5", None, None) == ("cpu", None, 4)
    assert _resolve_device("generic-x86-cpu", None, None) == ("cpu", None, None)  # 0 = all
    with pytest.raises(ConfigError, match="did you mean 'raspberry-pi-5'"):
        _resolve_device("raspberry-pi5", None, None)
