"""The device install, tested: build the wheel, install it into a fresh virtual environment with
only the runtime extras, with the very commands the device profiles (and the README) give, and
score bundles exported here, in an environment where torch, torchvision and scikit-learn are not
installed at all (not just hidden).

Steps (one venv, reused): `python -m build` (sdist, then the wheel from the sdist) -> venv ->
`pip install "$EDGEAD_WHEEL"` (profile generic-x86-cpu) -> checks -> `pip install
"${EDGEAD_WHEEL}[openvino]"` (profile intel-core-cpu) -> checks. Packages come from the
package index (pip's cache is used). Installed size and package count per extra are written
to benchmarks/results/wheel_install.json.

Slow (about 2-3 min with a warm pip cache, 7 min seen under heavy load) and needs the
package index, so it runs in `make test-wheel` (a step of .ci/run), not in `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))

if os.environ.get("EDGEAD_WHEEL_TEST") != "1":
    pytest.skip(
        "builds the wheel and installs it into a fresh venv from the package index (2 min or "
        "more); run it with `make test-wheel` (a step of .ci/run)",
        allow_module_level=True,
    )

FORBIDDEN = ("torch", "torchvision", "scikit-learn", "timm", "scipy")
RESULTS = REPO / "benchmarks" / "results" / "wheel_install.json"

_SCORE = r"""
import json, sys
from pathlib import Path
import cv2, numpy as np
import importlib.util
from edgead.runtime import Detector
import edgead

bundle, rows_bundle, images, backend = sys.argv[1:5]
frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(Path(images).glob("*.png"))]
out = {"edgead_file": edgead.__file__,
       "importable": {m: importlib.util.find_spec(m) is not None
                      for m in ("torch", "torchvision", "sklearn", "scipy", "timm")}}
with Detector.load(bundle, device="cpu", backend=backend, verify=True, threads=1) as det:
    out["backend"] = det.backend
    out["fallbacks"] = det.fallbacks
    out["reference"] = det.reference_check.to_dict()
    out["hint"] = det.backend_info.get("precision_hint_used")
    out["raw"] = [r.raw_score for r in det(frames)]
with Detector.load(rows_bundle, device="cpu", verify=True, threads=1) as det:
    out["rows_raw"] = det.score_rows(np.asarray(json.loads(sys.argv[5]))).raw_scores.tolist()
out["loaded"] = sorted(m for m in ("torch", "torchvision", "sklearn") if m in sys.modules)
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    """The environment without this checkout on the path: the venv must use the wheel."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    env["PIP_NO_COMPILE"] = "1"  # no .pyc at install (written on first import): less CPU
    return env


def _run(cmd: list[str] | str, cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        shell=isinstance(cmd, str),
    )
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _site_packages(venv: Path) -> Path:
    (path,) = venv.glob("lib/python*/site-packages")
    return path


def _measure(venv: Path, env: dict[str, str]) -> dict[str, Any]:
    """Installed packages (besides pip/setuptools, which every venv has) and their size."""
    listed = json.loads(
        _run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], venv, env)
    )
    names = sorted(p["name"].lower().replace("_", "-") for p in listed)
    packages = [n for n in names if n not in ("pip", "setuptools", "wheel")]
    site = _site_packages(venv)
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    seed = sum(
        f.stat().st_size
        for name in ("pip", "setuptools", "_distutils_hack")
        for f in (site / name).rglob("*")
        if f.is_file()
    )
    return {"packages": packages, "n_packages": len(packages), "mib": (size - seed) / 2**20}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Wheel, venv, bundles and images shared by the tests below (in file order)."""
    import cv2

    from tests.helpers.tiny_detectors import synthetic_images, tiny_bundle

    root = tmp_path_factory.mktemp("wheel")
    env = _env()
    start = time.perf_counter()
    _run([sys.executable, "-m", "build", "--outdir", str(root / "dist"), str(REPO)], root, env)
    (wheel,) = (root / "dist").glob("edgead-*.whl")
    build_s = time.perf_counter() - start
    _run([sys.executable, "-m", "venv", str(root / "venv")], root, env)
    venv = root / "venv"
    env = {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}", "EDGEAD_WHEEL": str(wheel)}
    images = root / "images"
    images.mkdir()
    frames = synthetic_images(2, seed=5) + synthetic_images(1, seed=6, anomalous=True)
    for i, img in enumerate(frames):
        cv2.imwrite(str(images / f"{i}.png"), img[:, :, ::-1])
    return {
        "root": root,
        "wheel": wheel,
        "venv": venv,
        "env": env,
        "images": images,
        "bundle": tiny_bundle("openvino"),  # model.onnx and the OpenVINO IR
        "rows_bundle": _rows_bundle(root),
        "rows": np.random.default_rng(1).normal(size=(5, 3)).round(3).tolist(),
        "report": {"build_s": build_s, "wheel": wheel.name},
    }


def _rows_bundle(root: Path) -> Path:
    from edgead.export import export_detector
    from tests.helpers.tiny_detectors import TinyRows, TinyRowsConfig, run_meta

    det = TinyRows(TinyRowsConfig())
    data = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    det.fit(data)
    out = root / "rows.edgead"
    export_detector(det, run_meta(det.score(data).scores), "onnx", "fp32", out)
    return out


def _install(work: dict[str, Any], profile: str) -> float:
    """Run the profile's install commands in the venv; seconds taken."""
    from edgead.devices import load_profile

    start = time.perf_counter()
    for line in load_profile(profile).install:
        _run(line, work["root"], work["env"])
    return time.perf_counter() - start


def _score(work: dict[str, Any], backend: str) -> dict[str, Any]:
    python = str(work["venv"] / "bin" / "python")
    args = [str(work["bundle"]), str(work["rows_bundle"]), str(work["images"]), backend]
    out = _run([python, "-c", _SCORE, *args, json.dumps(work["rows"])], work["root"], work["env"])
    return json.loads(out.strip().splitlines()[-1])


def _expected(work: dict[str, Any], backend: str) -> tuple[list[float], list[float]]:
    """Raw scores of the same inputs through this checkout's runtime (the dev environment)."""
    import cv2

    from edgead.runtime import Detector

    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(work["images"].glob("*.png"))]
    with Detector.load(work["bundle"], device="cpu", backend=backend, threads=1) as det:
        raw = [r.raw_score for r in det(frames)]
    with Detector.load(work["rows_bundle"], device="cpu", threads=1) as det:
        rows = det.score_rows(np.asarray(work["rows"])).raw_scores.tolist()
    return raw, rows


def _check_scores(work: dict[str, Any], backend: str, got: dict[str, Any]) -> None:
    assert str(work["venv"]) in got["edgead_file"], got["edgead_file"]  # the wheel, not the tree
    assert not any(got["importable"].values()), got["importable"]
    assert got["loaded"] == []
    assert got["reference"]["passed"] and got["reference"]["max_rel_err"] < 1e-4
    raw, rows = _expected(work, backend)
    np.testing.assert_allclose(got["raw"], raw, rtol=1e-5)
    np.testing.assert_allclose(got["rows_raw"], rows, rtol=1e-5)


def _record(work: dict[str, Any], key: str, values: dict[str, Any]) -> None:
    work["report"][key] = values
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(work["report"], indent=2))


def test_base_install_has_no_torch_and_scores(work: dict[str, Any]) -> None:
    seconds = _install(work, "generic-x86-cpu")
    measured = _measure(work["venv"], work["env"])
    assert "edgead" in measured["packages"] and "onnxruntime" in measured["packages"]
    assert not set(FORBIDDEN) & set(measured["packages"]), measured["packages"]
    assert "openvino" not in measured["packages"]
    got = _score(work, "onnxruntime")
    assert got["backend"] == "onnxruntime/CPUExecutionProvider" and not got["fallbacks"]
    _check_scores(work, "onnxruntime", got)
    # the CLI of the installed wheel: predict a folder, run the inspection loop on it
    edgead = str(work["venv"] / "bin" / "edgead")
    images = str(work["images"])
    predicted = json.loads(
        _run(
            [edgead, "predict", str(work["bundle"]), images, "--device", "cpu", "--json"],
            work["root"],
            work["env"],
        )
    )
    assert len(predicted["results"]) == 3
    np.testing.assert_allclose(
        [r["raw_score"] for r in predicted["results"]], got["raw"], rtol=1e-5
    )
    out = work["root"] / "run_out"
    _run(
        [
            edgead,
            "run",
            str(work["bundle"]),
            "--source",
            images,
            "--out",
            str(out),
            "--device",
            "cpu",
            "--status-every",
            "0",
        ],
        work["root"],
        work["env"],
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == summary["scored"] == 3
    _record(work, "edgead", {**measured, "install_s": seconds})


def test_openvino_extra_has_no_torch_and_scores_on_openvino(work: dict[str, Any]) -> None:
    seconds = _install(work, "intel-core-cpu")
    measured = _measure(work["venv"], work["env"])
    assert "openvino" in measured["packages"]
    assert not set(FORBIDDEN) & set(measured["packages"]), measured["packages"]
    got = _score(work, "openvino")
    assert got["backend"] == "openvino/CPU" and not got["fallbacks"], got["fallbacks"]
    assert got["hint"] == "f32"  # explicit f32: this CPU would otherwise run bf16
    _check_scores(work, "openvino", got)
    _record(work, "edgead[openvino]", {**measured, "install_s": seconds})
