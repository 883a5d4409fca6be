"""Device profiles: what each edge target prefers (backends, precision, threads). Torch-free.

A profile is a TOML file in this package (`edgead/devices/<name>.toml`) loaded into a frozen
`DeviceProfile` through `edgead.config.from_dict`, so an unknown key in a profile is an error that
names the key. Every profile cites the documents its facts come from in `sources`.

Layout of a profile::

    name = "jetson-orin-nano"
    description = "..."
    target = "tensorrt"          # bundle target for `edgead export --device NAME`
    precision = "fp16"           # "fp32" | "fp16"
    threads = 6                  # CPU threads for pre/post-processing and CPU backends; 0 = all
    image_size = 224             # default square model input, px
    memory_budget_mib = 2048     # RAM the inspection process should stay under, MiB
    sources = ["title - URL", ...]
    notes = "..."
    supported = true             # false: edgead cannot run there (notes say why); export refuses
    install = ["pip install ..."]  # exact commands (README's install table shows the same)

    [requires]                   # what `edgead devices` checks: component -> version spec
    python = ">=3.10"            # keys: python, onnxruntime, openvino, tensorrt, cuda_python,
    tensorrt = ">=10"            # cuda, jetpack; specs: ">=X", "<X", "==X", comma-separated

    [match]                      # how `edgead devices` recognises the machine
    arch = ["aarch64"]           # platform.machine() values; empty = any
    device_tree_model = ["Orin Nano"]   # substrings of /proc/device-tree/model; empty = any
    cpu_vendor = []              # /proc/cpuinfo vendor_id values; empty = any
    openvino_devices = []        # OpenVINO devices that must be present; empty = none needed
    cuda = false                 # a CUDA GPU must be present
    priority = 50                # the highest-priority matching profile wins

    [[backends]]                 # preference order, first that works wins
    backend = "onnxruntime"      # "onnxruntime" | "openvino" | "tensorrt"
    provider = "TensorrtExecutionProvider"   # ORT execution provider (onnxruntime only)
    device = "GPU"               # OpenVINO device (openvino only)
    required = false             # fail instead of falling back when this one is unavailable
    [backends.options]           # provider options / OpenVINO config, passed through as given
    trt_fp16_enable = true
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from edgead.config import from_dict
from edgead.errors import ConfigError, unknown_name_error

logger = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
#: components a profile's [requires] table may name (checked by `edgead devices`)
REQUIREMENTS = ("python", "onnxruntime", "openvino", "tensorrt", "cuda_python", "cuda", "jetpack")
TARGETS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True, kw_only=True)
class BackendPreference:
    """One entry of a profile's backend preference list."""

    backend: str
    provider: str | None = None
    device: str | None = None
    required: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError when the backend is unknown or its provider/device is missing."""
        if self.backend not in BACKENDS:
            raise unknown_name_error("backend", self.backend, BACKENDS)
        if self.backend == "onnxruntime" and not self.provider:
            raise ConfigError(
                "a [[backends]] entry with backend = 'onnxruntime' needs a provider, "
                "e.g. provider = 'CPUExecutionProvider'"
            )
        if self.backend == "openvino" and not self.device:
            raise ConfigError(
                "a [[backends]] entry with backend = 'openvino' needs a device, e.g. device = 'CPU'"
            )
        if not isinstance(self.options, dict):
            raise ConfigError(f"[backends.options] must be a table, got {self.options!r}")

    @property
    def label(self) -> str:
        """Short name, e.g. 'onnxruntime/CUDAExecutionProvider' or 'openvino/GPU'."""
        detail = self.provider or self.device
        return f"{self.backend}/{detail}" if detail else self.backend


@dataclass(frozen=True, kw_only=True)
class ProfileMatch:
    """Conditions under which `edgead devices` picks a profile (all given ones must hold)."""

    arch: tuple[str, ...] = ()
    device_tree_model: tuple[str, ...] = ()
    cpu_vendor: tuple[str, ...] = ()
    openvino_devices: tuple[str, ...] = ()
    cuda: bool = False
    priority: int = 0


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """What a device prefers; see the module docstring for the TOML layout."""

    name: str
    description: str
    target: str
    precision: str
    threads: int
    image_size: int
    memory_budget_mib: int
    backends: tuple[BackendPreference, ...]
    match: ProfileMatch
    sources: tuple[str, ...]
    notes: str = ""
    supported: bool = True
    install: tuple[str, ...] = ()
    requires: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError on an unknown target/precision, a bad number or no sources."""
        if self.target not in TARGETS:
            raise unknown_name_error(f"target in profile '{self.name}'", self.target, TARGETS)
        if self.precision not in PRECISIONS:
            raise unknown_name_error(
                f"precision in profile '{self.name}'", self.precision, PRECISIONS
            )
        if self.threads < 0 or self.image_size <= 0 or self.memory_budget_mib <= 0:
            raise ConfigError(
                f"profile '{self.name}': threads must be >= 0, image_size and "
                f"memory_budget_mib > 0 (got {self.threads}, {self.image_size}, "
                f"{self.memory_budget_mib})"
            )
        if not self.backends:
            raise ConfigError(f"profile '{self.name}' lists no [[backends]]; add at least one")
        if not self.sources:
            raise ConfigError(
                f"profile '{self.name}' cites no sources; say where its facts come from"
            )
        if self.supported and not self.install:
            raise ConfigError(
                f"profile '{self.name}' gives no install commands; add install = [...] or mark "
                "it supported = false (with the reason in notes)"
            )
        if not isinstance(self.requires, dict):
            raise ConfigError(f"profile '{self.name}': [requires] must be a table")
        for key, spec in self.requires.items():
            if key not in REQUIREMENTS:
                raise unknown_name_error(f"requirement in profile '{self.name}'", key, REQUIREMENTS)
            parse_spec(str(spec))


def parse_spec(spec: str) -> list[tuple[str, tuple[int, ...]]]:
    """[(operator, version tuple)] of a spec such as ">=12,<13".

    Raises:
        ConfigError: an empty clause, an unknown operator or a version that is not numbers.
    """
    clauses = []
    for clause in spec.split(","):
        match = re.fullmatch(r"\s*(>=|<=|==|<|>)\s*(\d+(?:\.\d+)*)\s*", clause)
        if match is None:
            raise ConfigError(
                f"version spec {spec!r}: clause {clause!r} is not OP VERSION "
                "(OP one of >=, <=, ==, <, >; e.g. '>=12,<13')"
            )
        clauses.append((match.group(1), version_tuple(match.group(2))))
    return clauses


def version_tuple(version: str) -> tuple[int, ...]:
    """(12, 6, 1) from '12.6.1', '12.6.1.post1' or '2024.4.0-16579'; () when no leading number."""
    numbers = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(p) for p in numbers.group(0).split(".")) if numbers else ()


def profile_from_dict(data: dict[str, Any], origin: str = "<dict>") -> DeviceProfile:
    """A validated DeviceProfile from a parsed TOML dict.

    Raises:
        ConfigError: an unknown key (named), a wrong type or an invalid value; `origin` (the
            file name) is put in front of the message.
    """
    try:
        raw = dict(data)
        backends = raw.pop("backends", None)
        match = raw.pop("match", {})
        if not isinstance(backends, list):
            raise ConfigError("expected a [[backends]] array of tables")
        if not isinstance(match, dict):
            raise ConfigError("expected a [match] table")
        # from_dict coerces flat fields; the nested tables are built here first.
        built = from_dict(_FlatProfile, raw)
        return _validated(
            DeviceProfile(
                **dataclasses.asdict(built),
                backends=tuple(from_dict(BackendPreference, b) for b in backends),
                match=from_dict(ProfileMatch, match),
            )
        )
    except ConfigError as exc:
        raise ConfigError(f"device profile {origin}: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class _FlatProfile:
    """The scalar part of a DeviceProfile (what `from_dict` can coerce directly)."""

    name: str
    description: str
    target: str
    precision: str
    threads: int
    image_size: int
    memory_budget_mib: int
    sources: tuple[str, ...]
    notes: str = ""
    supported: bool = True
    install: tuple[str, ...] = ()
    requires: dict[str, str] = field(default_factory=dict)


def _validated(profile: DeviceProfile) -> DeviceProfile:
    profile.validate()
    return profile


def list_profiles() -> list[str]:
    """Names of the profiles shipped in `edgead/devices/*.toml`, sorted."""
    root = resources.files(__package__)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name: str) -> DeviceProfile:
    """The shipped profile `name` (e.g. 'jetson-orin-nano').

    Raises:
        ConfigError: no such profile (with the known names and a close match), or the file is
            invalid, or its `name` differs from its file name.
    """
    import tomllib

    known = list_profiles()
    if name not in known:
        raise unknown_name_error("device profile", name, known)
    text = resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"device profile {name}.toml is not valid TOML: {exc}") from exc
    profile = profile_from_dict(data, origin=f"{name}.toml")
    if profile.name != name:
        raise ConfigError(
            f"device profile {name}.toml says name = '{profile.name}'; they must agree"
        )
    return profile


def load_all_profiles() -> list[DeviceProfile]:
    """Every shipped profile, loaded and validated."""
    return [load_profile(name) for name in list_profiles()]


def profile_export_settings(name: str) -> tuple[str, str]:
    """(target, precision) that `edgead export --device NAME` should use, e.g. ('tensorrt', 'fp16').

    Raises:
        ConfigError: `name` is not a shipped profile, or a device edgead does not support.
    """
    profile = load_profile(name)
    if not profile.supported:
        raise ConfigError(f"device profile '{name}' is not supported: {profile.notes}")
    return profile.target, profile.precision
