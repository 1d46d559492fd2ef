"""scripts/bootstrap's choice of torch build, asked without installing anything."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = ROOT / "scripts" / "bootstrap"


def _source(env: dict[str, str]) -> str:
    result = subprocess.run([str(BOOTSTRAP), "--torch-source"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.strip()


@pytest.fixture
def index():
    """A local stand-in for the CPU index that answers /torch/."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/whl/cpu/torch/" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    server.shutdown()


@pytest.mark.skipif(Path("/proc/driver/nvidia/version").exists(), reason="this machine has an NVIDIA driver")
def test_cpu_build_without_a_gpu_when_its_index_answers(index, tmp_path):
    no_gpu = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    (tmp_path / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # present but finds no GPU
    (tmp_path / "nvidia-smi").chmod(0o755)
    assert _source({**no_gpu, "TORCH_CPU_INDEX": index}) == f"cpu {index}: no NVIDIA GPU"
    assert _source({**no_gpu, "TORCH_CPU_INDEX": "http://127.0.0.1:9/whl/cpu"}).startswith(
        "pypi: no NVIDIA GPU, but http://127.0.0.1:9/whl/cpu does not answer")
    assert _source({**no_gpu, "TORCH_CPU_INDEX": ""}) == "pypi: TORCH_CPU_INDEX is empty"


def test_pypi_build_with_a_gpu(index, tmp_path):
    (tmp_path / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100'\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    assert _source({"PATH": f"{tmp_path}:{os.environ['PATH']}", "TORCH_CPU_INDEX": index}) == (
        "pypi: an NVIDIA GPU is present, PyPI's build brings CUDA")
