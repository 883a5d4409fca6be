"""edgead batch / serve on a real local Ray cluster: a head and a worker node on 127.0.0.1.

One cluster (`ray start --block`, dashboard and usage stats off, its own temp dir and auth token)
is shared by the module; its processes are killed by pid at the end (never `ray stop`, which would
stop other Ray instances on the machine). Every Ray driver runs in a subprocess (the CLI, or a
short script), so this process never imports Ray and its settings cannot leak between tests.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
    pytest.skip("Ray is not installed (pip install 'edgead[cluster]')", allow_module_level=True)
psutil = pytest.importorskip("psutil", reason="psutil is needed to kill a worker node")
pytest.importorskip("pyarrow", reason="pyarrow is needed for the results (edgead[cluster])")

from tests.helpers.tiny_detectors import synthetic_images, tiny_bundle  # noqa: E402

#: ~2-3 min on a shared 2-core VM (Ray start-up dominates); still run by `make test`
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY_BIN = Path(sys.executable).with_name("ray")
N_IMAGES = 40  # + one broken file


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL `proc` and every process below it; the pids killed."""
    try:
        root = psutil.Process(proc.pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return []
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    proc.wait(timeout=10)
    return [p.pid for p in procs]


class LocalCluster:
    """A Ray head and worker nodes started with `ray start --block` (one process tree each)."""

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="edgead-ray-", dir="/tmp")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests" / "unit")]),
            "RAY_USAGE_STATS_ENABLED": "0",
            # a token of its own: ~/.ray/auth_token may belong to another Ray on this machine
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "OMP_NUM_THREADS": "1",
            # notice a dead node in ~3 s instead of ~30 s
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        self.workers: list[subprocess.Popen] = []
        self.head = self._start(
            ["--head", "--port", str(self.port), "--num-cpus", "2", "--include-dashboard=false"]
            + ["--temp-dir", self.temp_dir]
        )

    def _start(self, args: list[str]) -> subprocess.Popen:
        cmd = [str(RAY_BIN), "start", "--block", "--node-ip-address", "127.0.0.1"]
        return subprocess.Popen(
            [*cmd, "--disable-usage-stats", *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def add_worker(self, num_cpus: int = 1) -> subprocess.Popen:
        proc = self._start(["--address", self.address, "--num-cpus", str(num_cpus)])
        self.workers.append(proc)
        return proc

    def python(self, code: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        """Run `code` in a fresh interpreter with the cluster's environment."""
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def wait_nodes(self, n: int, timeout_s: float = 180) -> None:
        proc = self.python(
            f"""
            import time, ray
            deadline = time.monotonic() + {timeout_s}
            while True:
                try:
                    ray.init(address="{self.address}", logging_level="ERROR")
                    break
                except (ConnectionError, RuntimeError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            while sum(node["Alive"] for node in ray.nodes()) < {n}:
                if time.monotonic() > deadline:
                    raise TimeoutError("nodes missing")
                time.sleep(0.5)
            """,
            timeout_s + 30,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    def close(self) -> None:
        for proc in [*self.workers, self.head]:
            _kill_tree(proc)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster()
    try:
        local.add_worker()
        local.wait_nodes(2)
        yield local
    finally:
        local.close()


@pytest.fixture(scope="module")
def bundle() -> Path:
    return tiny_bundle("onnx")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    images = synthetic_images(N_IMAGES - 4, seed=11) + synthetic_images(4, seed=12, anomalous=True)
    for i, image in enumerate(images):
        sub = root / f"station{i % 3}"
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"{i:04d}.png"), image)
    (root / "station0" / "broken.png").write_bytes(b"not an image")
    return root


def _reference(bundle: Path, paths: list[str]) -> dict[str, float]:
    from edgead.runtime import Detector

    with Detector.load(bundle, device="cpu") as det:
        return {p: det(cv2.imread(p), channel_order="BGR").raw_score for p in paths}


def _rows_so_far(parts: Path) -> dict:
    """Rows in the part files written so far and the pids of the workers that scored them."""
    import pyarrow.parquet as pq

    rows, pids = 0, set()
    for part in sorted(parts.glob("part-*.parquet")) if parts.is_dir() else []:
        try:
            workers = pq.read_table(part, columns=["worker"]).column("worker").to_pylist()
        except (OSError, ValueError):  # merged and deleted at the end meanwhile
            continue
        rows += len(workers)
        pids |= {int(w.rsplit(":", 1)[1]) for w in workers}
    return {"rows": rows, "pids": pids}


def test_worker_killed_mid_job_every_input_has_one_row(
    cluster: LocalCluster, bundle: Path, folder: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from edgead.cluster.batch import list_inputs

    out = tmp_path / "results.parquet"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import json
                from _slow_scorer import SlowScorer
                from edgead.cluster.batch import BatchOptions
                from edgead.cluster.ray_batch import run_batch_ray
                summary = run_batch_ray(
                    "{bundle}", "{folder}", "{out}",
                    BatchOptions(batch_size=2, flush_rows=2, device="cpu"),
                    address="{cluster.address}", workers=2, scorer_cls=SlowScorer,
                )
                print(json.dumps(summary.__dict__))
                """
            ),
        ],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker_node = cluster.workers[0]
    parts = out.with_name(out.name + ".parts")
    deadline = time.monotonic() + 240
    while True:  # kill the worker node once one of its actors has delivered rows
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the worker node's actor delivered no rows"
        done = _rows_so_far(parts)
        node_pids = {p.pid for p in psutil.Process(worker_node.pid).children(recursive=True)}
        if done["pids"] & node_pids:
            break
        time.sleep(0.05)
    assert done["rows"] < N_IMAGES + 1, "the job was over before the kill"
    node_pids |= set(_kill_tree(worker_node))  # the worker node and its actors, mid-job
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])

    table = pq.read_table(out).to_pandas()
    paths = list_inputs(folder)
    assert sorted(table["path"]) == sorted(paths)  # every input exactly once
    assert summary["rows"] == len(paths) == N_IMAGES + 1 and summary["failed"] == 1
    assert summary["scored"] + summary["failed"] == len(paths)
    broken = table[table["path"].str.endswith("broken.png")]
    assert "cannot decode image" in broken["error"].iloc[0]
    ok = table[table["error"].isna()]
    ref = _reference(bundle, list(ok["path"]))
    np.testing.assert_array_equal(ok["raw_score"].to_numpy(), [ref[p] for p in ok["path"]])
    pids = {int(w.rsplit(":", 1)[1]) for w in table["worker"]}
    assert pids & node_pids, "no row came from the killed node: the kill missed the job"
    assert pids - node_pids, "no row came from the surviving node"


def test_cli_batch_on_ray_matches_one_process_and_resumes(
    cluster: LocalCluster, bundle: Path, folder: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from edgead.cluster.batch import BatchOptions, run_batch

    ray_out = tmp_path / "ray.parquet"
    cmd = [
        sys.executable, "-m", "edgead.cli.main", "batch", str(bundle), "--data", str(folder),
        "--out", str(ray_out), "--ray", cluster.address, "--workers", "1", "--batch-size", "4",
        "--device", "cpu", "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # one broken file: exit 1, job complete
    report = json.loads(proc.stdout)
    assert (report["rows"], report["scored"], report["failed"]) == (N_IMAGES + 1, N_IMAGES, 1)

    local_out = tmp_path / "local.parquet"
    run_batch(bundle, folder, local_out, BatchOptions(batch_size=4, device="cpu"))
    a, b = pq.read_table(ray_out).to_pandas(), pq.read_table(local_out).to_pandas()
    assert list(a["path"]) == list(b["path"])
    np.testing.assert_array_equal(a["raw_score"], b["raw_score"])
    np.testing.assert_array_equal(a["score"], b["score"])

    again = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300)
    report = json.loads(again.stdout)
    assert (report["skipped"], report["scored"], report["rows"]) == (N_IMAGES, 0, N_IMAGES + 1)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_on_ray_answers_concurrent_requests(
    cluster: LocalCluster, bundle: Path, folder: Path
) -> None:
    port = _free_port()
    cmd = [
        sys.executable, "-m", "edgead.cli.main", "serve", str(bundle), "--port", str(port),
        "--ray", cluster.address, "--replicas", "2", "--device", "cpu",
    ]  # fmt: skip
    server = subprocess.Popen(cmd, env=cluster.env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.communicate()[1][-3000:]
            try:
                if _get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(1)
        paths = sorted(str(p) for p in folder.rglob("0*.png"))[:16]
        ref = _reference(bundle, paths)

        def post(path: str) -> dict:
            request = urllib.request.Request(
                f"{base}/score?item={path}",
                data=Path(path).read_bytes(),
                headers={"Content-Type": "image/png"},
            )
            with urllib.request.urlopen(request, timeout=60) as reply:
                return json.loads(reply.read())

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(post, paths))
        assert [r["item"] for r in results] == paths
        assert [r["raw_score"] for r in results] == [ref[p] for p in paths]
        status, body = _get(f"{base}/nope")
        assert status == 404
        deadline = time.monotonic() + 20  # replicas count into the stats actor asynchronously
        while True:
            text = _get(f"{base}/metrics")[1].decode()
            if "edgead_frames_scored_total 16" in text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "edgead_frames_scored_total 16" in text
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            _kill_tree(server)
    assert server.returncode == 0, server.stderr.read()[-3000:] if server.stderr else ""
