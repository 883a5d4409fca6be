"""edgead batch without Ray (inputs, scoring, resumable Parquet) and edgead serve in one process."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="pyarrow is needed for batch results (edgead[cluster])")
import pyarrow.parquet as pq  # noqa: E402

from edgead.cluster.batch import (  # noqa: E402
    BatchOptions,
    BatchScorer,
    PartWriter,
    ResultStore,
    list_inputs,
    result_schema,
    run_batch,
)
from edgead.cluster.service import HttpServer, ScoringService  # noqa: E402
from edgead.errors import ConfigError, DataError  # noqa: E402
from edgead.runtime import Detector  # noqa: E402
from tests.helpers.tiny_detectors import (  # noqa: E402
    TinyRows,
    TinyRowsConfig,
    run_meta,
    synthetic_images,
    tiny_bundle,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle() -> Path:
    return tiny_bundle("onnx")


@pytest.fixture(scope="module")
def rows_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    from edgead.export import export_detector

    rng = np.random.default_rng(0)
    det = TinyRows(TinyRowsConfig())
    det.fit(rng.normal(size=(200, 5)).astype(np.float32))
    rows = rng.normal(size=(6, 5)).astype(np.float32) * 2
    out = tmp_path_factory.mktemp("rows") / "rows.edgead"
    meta = {**run_meta(det.score(rows).scores), "data": {"feature_names": list("abcde")}}
    export_detector(det, meta, "onnx", "fp32", out, parity_inputs=rows[:4])
    return out, rows


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    images = synthetic_images(10, seed=21) + synthetic_images(2, seed=22, anomalous=True)
    for i, image in enumerate(images):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"{i:03d}.png"), image)
    (root / "a" / "zz_broken.png").write_bytes(b"\x89PNG broken")
    (root / "notes.txt").write_text("not an image")
    return root


def _reference(bundle: Path, paths: list[str]) -> dict[str, float]:
    with Detector.load(bundle, device="cpu") as det:
        return {p: det(cv2.imread(p), channel_order="BGR").raw_score for p in paths}


def test_list_inputs_folder_glob_text_and_parquet(folder: Path, tmp_path: Path) -> None:
    paths = list_inputs(folder)
    assert len(paths) == 13 and paths == sorted(paths)
    assert all(Path(p).is_absolute() and not p.endswith(".txt") for p in paths)
    assert list_inputs(f"{folder}/a/*.png") == [p for p in paths if "/a/" in p]
    listing = tmp_path / "paths.txt"
    listing.write_text("# archive\n" + "\n".join(paths[:3] + paths[:1]) + "\n\n")
    assert list_inputs(listing) == paths[:3]  # comment, blank line and duplicate dropped
    table = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"path": paths[3:5]}), table)
    assert list_inputs(table) == paths[3:5]
    pq.write_table(pa.table({"file": paths[3:5]}), table)
    with pytest.raises(DataError, match="no 'path' column"):
        list_inputs(table)
    with pytest.raises(DataError, match="no such folder or file"):
        list_inputs(tmp_path / "missing")
    with pytest.raises(DataError, match="names no images"):
        list_inputs(f"{tmp_path}/*.jpg")


def test_batch_scores_like_detector_and_records_failures(
    bundle: Path, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.parquet"
    maps = tmp_path / "maps"
    summary = run_batch(
        bundle, folder, out, BatchOptions(batch_size=5, flush_rows=4, device="cpu", maps_dir=maps)
    )
    assert (summary.inputs, summary.scored, summary.failed, summary.rows) == (13, 12, 1, 13)
    table = pq.read_table(out)
    assert table.schema.equals(result_schema())
    df = table.to_pandas()
    assert list(df["path"]) == list_inputs(folder)
    broken = df[df["path"].str.endswith("zz_broken.png")].iloc[0]
    assert "cannot decode image" in broken["error"] and np.isnan(broken["raw_score"])
    ok = df[df["error"].isna()]
    ref = _reference(bundle, list(ok["path"]))
    np.testing.assert_array_equal(ok["raw_score"].to_numpy(), [ref[p] for p in ok["path"]])
    assert ok["is_anomaly"].sum() >= 1 and (ok["graph_ms"] > 0).all()
    assert all(Path(m).is_file() for m in ok["map_path"]) and len(list(maps.iterdir())) == 12
    assert not out.with_name(out.name + ".parts").exists()  # merged and cleaned up


def test_batch_resumes_after_a_crash_without_duplicates(
    bundle: Path, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.parquet"
    paths = list_inputs(folder)
    # a crashed run: one whole part file on disk, plus a temporary file it was writing
    scorer = BatchScorer(bundle, BatchOptions(device="cpu"))
    store = ResultStore(out)
    store.append(scorer(pa.table({"path": paths[:4]})))
    (store.parts_dir / ".part-x.parquet.tmp").write_bytes(b"half")
    scorer.close()
    summary = run_batch(bundle, folder, out, BatchOptions(batch_size=3, device="cpu"))
    assert (summary.skipped, summary.scored + summary.failed, summary.rows) == (4, 9, 13)
    df = pq.read_table(out).to_pandas()
    assert sorted(df["path"]) == sorted(paths)
    # a re-run skips every scored path and retries the failed one (still one row each)
    again = run_batch(bundle, folder, out, BatchOptions(device="cpu"))
    assert (again.skipped, again.scored, again.failed, again.rows) == (12, 0, 1, 13)
    assert pq.read_table(out).num_rows == 13


def test_part_writer_drops_a_repeated_path(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    store = ResultStore(tmp_path / "r.parquet")
    writer = PartWriter(store, BatchOptions(flush_rows=3), 4, lambda d, t, _: calls.append((d, t)))
    rows = [{"path": p, "raw_score": 1.0} for p in ("a", "b")]
    writer.add(pa.Table.from_pylist(rows, schema=result_schema()))
    retried = [{"path": "b", "raw_score": 1.0}, {"path": "c", "error": "DataError: bad"}]
    writer.add(pa.Table.from_pylist(retried, schema=result_schema()))  # "b" again: a retried task
    assert (writer.scored, writer.failed) == (2, 1) and calls == [(3, 4)]
    assert sorted(store.finalize().column("path").to_pylist()) == ["a", "b", "c"]


def test_batch_checks_options_and_bundle_before_work(
    bundle: Path, rows_bundle: tuple[Path, np.ndarray], folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        run_batch(bundle, folder, tmp_path / "r.parquet", BatchOptions(batch_size=0))
    with pytest.raises(ConfigError, match="scores tabular rows"):
        run_batch(rows_bundle[0], folder, tmp_path / "r.parquet")
    with pytest.raises(ConfigError, match="is a folder"):
        run_batch(bundle, folder, tmp_path)
    assert not list(tmp_path.iterdir())


def test_cli_batch_one_process(bundle: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.parquet"
    cmd = [sys.executable, "-m", "edgead.cli.main", "batch", str(bundle), "--data", str(folder)]
    proc = subprocess.run(
        [*cmd, "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 1, proc.stderr  # the broken file: complete output, exit 1
    report = json.loads(proc.stdout)
    assert (report["rows"], report["failed"], report["engine"]) == (13, 1, "one process")
    bad = subprocess.run(
        [*cmd, "--out", str(out), "--batch-size", "0"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert bad.returncode == 2 and "batch_size must be >= 1" in bad.stderr


def _post(url: str, body: bytes, ctype: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_one_process_images(bundle: Path, folder: Path) -> None:
    paths = [p for p in list_inputs(folder) if "broken" not in p][:8]
    ref = _reference(bundle, paths)
    server = HttpServer(ScoringService(bundle, device="cpu"), 0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:

        def post(path: str) -> dict:
            status, reply = _post(f"{base}/score?item={path}", Path(path).read_bytes(), "image/png")
            assert status == 200, reply
            return reply

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(post, paths))
        assert [r["item"] for r in results] == paths
        assert [r["raw_score"] for r in results] == [ref[p] for p in paths]
        first = results[0]
        assert {"ts", "score", "is_anomaly"} <= first.keys()
        assert {"decode", "graph", "search", "total"} <= first["latency_ms"].keys()
        status, reply = _post(f"{base}/score", b"garbage", "image/png")
        assert status == 400 and "cannot decode image" in reply["error"]
        status, reply = _post(f"{base}/score", b'{"rows": [[1, 2]]}', "application/json")
        assert status == 400 and "scores images" in reply["error"]
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as reply:
            health = json.loads(reply.read())
        assert health["status"] == "ok" and health["scored"] == 8 and health["rejected"] == 2
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        assert "edgead_frames_scored_total 8" in text and "edgead_frames_read_total 10" in text
        assert 'edgead_latency_recent_ms{quantile="0.5"}' in text
    finally:
        server.close()


def test_serve_one_process_rows(rows_bundle: tuple[Path, np.ndarray]) -> None:
    path, rows = rows_bundle
    with Detector.load(path, device="cpu") as det:
        ref = det.score_rows(rows)
    server = HttpServer(ScoringService(path, device="cpu"), 0).start()
    url = f"http://127.0.0.1:{server.port}/score"
    try:
        status, reply = _post(url, json.dumps({"rows": rows.tolist()}).encode(), "application/json")
        assert status == 200
        got = [r["raw_score"] for r in reply["results"]]
        np.testing.assert_allclose(got, ref.raw_scores, rtol=1e-6)
        named = [dict(zip("abcde", map(float, r), strict=True)) for r in rows[:2]]
        status, reply = _post(f"{url}?item=line", json.dumps(named).encode(), "application/json")
        assert status == 200 and [r["item"] for r in reply["results"]] == ["line:0", "line:1"]
        status, reply = _post(url, b'{"rows": [{"a": 1}]}', "application/json")
        assert status == 400 and "lack features" in reply["error"]
        status, reply = _post(url, b"png bytes", "image/png")
        assert status == 400 and "tabular rows" in reply["error"]
    finally:
        server.close()


def test_runtime_and_one_process_paths_never_import_ray() -> None:
    script = (
        "import sys; sys.modules['ray'] = None\n"  # any `import ray` now raises ImportError
        "import edgead.runtime, edgead.runtime.loop, edgead.cluster.batch, edgead.cluster.service\n"
        "import edgead.cli.main\n"
        "from edgead.cluster import require_module\n"
        "try:\n"
        "    require_module('ray', '--ray')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("BackendUnavailableError") and "edgead[cluster]" in proc.stdout


def test_cli_serve_one_process_stops_cleanly_on_sigterm(bundle: Path, folder: Path) -> None:
    import signal
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "edgead.cli.main", "serve", str(bundle), "--port", str(port),
         "--device", "cpu"],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
        image = next(p for p in list_inputs(folder) if "broken" not in p)
        status, reply = _post(f"{base}/score", Path(image).read_bytes(), "image/png")
        assert status == 200 and reply["raw_score"] == _reference(bundle, [image])[image]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode == 0
