"""Shared test fixtures. Tests run on the CPU and use small models and small images."""
import contextlib
import gc
import io
import os
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the scripts are modules at the project root

# README's `pytest -n auto` runs a process per core (pytest-xdist): each with torch's default of a thread per
# core would oversubscribe them, its threads spinning while they wait for each other (the suite on 2 cores:
# 12:11 in one process, 11:26 in two with 2 threads each, 7:29 with 1). Set before torch is imported; the
# train.py and predict.py processes the tests start inherit it.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import torch  # noqa: E402

import predict  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from images import BUNDLED_SAMPLE  # noqa: E402

utils.reuse_freed_cpu_memory()  # as train.py and predict.py run on a CPU, and the tests train in-process too


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    """Under `pytest -n auto`, a worker still busy 5 s after the controller has ended the session is sent a
    SIGINT by execnet, which printed "Exception ignored in: ... KeyboardInterrupt" at the end of some runs: at
    its end pytest collects garbage five times over (to report exceptions raised in finalizers), 0.6 to 1.2 s
    each over the 820,000 to 850,000 objects a worker holds by then. One collection here finds the
    garbage, then the objects left are frozen (gc.freeze: left out of later collections), so the five take
    next to nothing; an exception raised in a finalizer is still reported, as pytest's hook is still in place."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        gc.collect()
        gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true, as .ci/run sets it) a test may skip only for want of a GPU: any other skip (a package or
    a browser that did not install) is a failure, not a pass that tested nothing. (A module skipped whole as it
    is collected is not a test's report: no test file skips so; an importorskip goes inside the test.)"""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "no CUDA GPU" not in reason and "this machine has a GPU" not in reason:
            report.outcome, report.longrepr = "failed", f"skipped in CI, where only the CUDA tests may: {reason}"


@pytest.fixture
def bench(monkeypatch, capsys):
    """bench(script, *args): what bench/<script> prints, run in this process, which has its imports already (a
    process of its own would spend seconds on them). The kinds of attention and LayerNorm it sets are put
    back after the test."""
    import importlib

    import attention
    import kernels
    monkeypatch.setattr(attention, "ATTENTION", attention.ATTENTION)
    monkeypatch.setattr(kernels, "LAYER_NORM", kernels.LAYER_NORM)
    monkeypatch.syspath_prepend(str(ROOT / "bench"))

    def run(script: str, *args) -> str:
        monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
        capsys.readouterr()
        importlib.import_module(Path(script).stem).main()
        return capsys.readouterr().out
    return run


@pytest.fixture(scope="session")
def flowers() -> Path:
    """The bundled sample: 100 real photos, 20 in each of flower_photos' 5 classes."""
    return BUNDLED_SAMPLE


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder; /short/<name> promises more bytes than it sends, as a dropped connection does;
    /unsized/<name> sends half of it with no length, then closes (HTTP/1.0: the end of the stream ends the file);
    /garbled/<name> sends it whole with a length past reading."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        kind, _, name = self.path.lstrip("/").partition("/")
        if kind in ("short", "unsized", "garbled"):
            body = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            length = {"short": str(len(body) * 2), "garbled": "abc"}.get(kind)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            self.wfile.write(body[:len(body) // 2] if kind == "unsized" else body)
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def served(tmp_path):
    """(folder, base URL): what is put in the folder is served at the URL, from 127.0.0.1 only."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- A trained run and the programs predict.py --export writes from it: tests/test_predict.py and
# test_predict_programs.py check them against the run's checkpoint, tests/test_export.py as its V1 model (a training run takes some 10 s here,
# an ONNX export some 20 s, a .pt2 10 s). The three files are one xdist group, "programs", so that under
# `pytest -n auto --dist loadgroup` these are made once, in the one process that runs both files.

@pytest.fixture(scope="session")
def trained(flowers, tmp_path_factory) -> Path:
    """A folder holding runs/r/best.pth: one epoch of the small variant at 64 px."""
    root = tmp_path_factory.mktemp("predict")
    with contextlib.redirect_stdout(io.StringIO()):  # in this process: no start-up
        train.main([str(a) for a in ["--data-path", flowers, "--model", "swin_micro_patch4_window4_128",
                                     "--img-size", "64", "--epochs", "1", "--batch-size", "16", "--workers", "0",
                                     "--no-progress", "--output", root / "runs", "--name", "r"]])
    return root


@pytest.fixture(scope="session")
def checkpoint(trained) -> dict:
    return torch.load(trained / "runs" / "r" / "best.pth", weights_only=True)


@pytest.fixture(scope="session")
def photos(flowers) -> list:
    return sorted(flowers.glob("*/*.jpg"))


def exported(trained, path: Path, said: str, *flags) -> Path:
    """The trained checkpoint as predict.py --export writes it to `path` (in this process: no start-up)."""
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(io.StringIO()) as err:
        patch.chdir(trained)
        predict.main(["--export", str(path), *flags])
    said_lines = err.getvalue().splitlines()
    assert len(said_lines) == 2 and said_lines[1].startswith(f"wrote {path} ({said}"), said_lines  # no warning
    return path


@pytest.fixture(scope="session")
def onnx_program(trained, export_packages, tmp_path_factory) -> Path:
    return exported(trained, tmp_path_factory.mktemp("onnx") / "flowers.onnx", "ONNX opset")


@pytest.fixture(scope="session")
def pt2_program(trained, tmp_path_factory) -> Path:
    """For [0, 1] float input (--export-input float32), so that the programs the tests check take each input type
    in each format: the .onnx ones uint8 (onnx_program, test_export.py's V2) or float32 (the int8 test of
    test_predict_programs.py), the .pt2 ones float32 (this one) or uint8 (test_export.py's V2)."""
    return exported(trained, tmp_path_factory.mktemp("pt2") / "flowers.pt2", "torch.export;",
                    "--export-input", "float32")


@pytest.fixture(scope="session")
def export_packages():
    """onnx, onnxscript and onnxruntime, the optional requirements-export.txt: a test that needs them is
    skipped without them, except under CI=true, where .ci/run has installed them and it must run."""
    import importlib
    try:
        return [importlib.import_module(name) for name in ("onnx", "onnxscript", "onnxruntime")]
    except ImportError as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{error.name} is not installed: pip install -r requirements-export.txt")


@pytest.fixture
def unreadable(monkeypatch):
    """Folders made unreadable (as chmod 000 makes them for a user), whoever runs the tests (root reads anything):
    listing them (os.scandir, which os.walk and readable_folder call) fails with EACCES."""
    import errno
    blocked, scandir = set(), os.scandir

    def guarded(path="."):
        if os.path.realpath(path) in blocked:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return scandir(path)
    monkeypatch.setattr(os, "scandir", guarded)
    return lambda folder: blocked.add(os.path.realpath(folder))
