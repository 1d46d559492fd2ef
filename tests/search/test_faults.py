"""Faults a search rides out or reports truthfully: Ctrl-C at any moment, a full disk."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from kubetune.search.attributes import FAIL_REASON_ATTR
from tests.conftest import BIN
from tests.polling import wait_until
from tests.search.conftest import (
    search_section,
    small_base,
    start_search,
    trials_now,
    write_config,
)

pytestmark = pytest.mark.postgres

SIGINTS = 20


@pytest.mark.timeout(SIGINTS * 150)  # each run starts a search (2 workers in every third)
def test_ctrl_c_at_random_moments_stops_every_worker_at_once(fast_config, tmp_path, postgres_url):
    """SIGINT at moments drawn over startup, storage, data and training, 20 times: exit 130,
    the resume line once, no trial left RUNNING, no trial trained on past the epoch it was in."""
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=200, fraction=0.2),
                          search_section(n_trials=50))
    env = {"KUBETUNE_STORAGE_URL": postgres_url}
    # The pace: how long until the entry point runs, and until a first epoch is reported.
    began = time.monotonic()
    subprocess.run([str(BIN / "ml-search"), "--help"], check=True, capture_output=True)
    entry = time.monotonic() - began
    began = time.monotonic()
    probe = start_search(config, "--study-name", "pace", "--n-jobs", "2", cwd=tmp_path, env=env)
    wait_until(lambda: any(t.intermediate_values for t in trials_now(postgres_url, "pace")),
               timeout=300, what="the first epoch of the pace run")
    first_epoch = time.monotonic() - began
    probe.send_signal(signal.SIGINT)
    probe.communicate(timeout=300)

    rng = random.Random(35)
    for i in range(SIGINTS):
        study, jobs = f"sigint-{i}", "2" if i % 3 == 0 else "1"
        proc = start_search(config, "--study-name", study, "--n-jobs", jobs, cwd=tmp_path, env=env)
        time.sleep(entry + rng.uniform(0, first_epoch))
        proc.send_signal(signal.SIGINT)
        seen = {t.number: len(t.intermediate_values) for t in trials_now(postgres_url, study)}
        _, err = proc.communicate(timeout=300)
        where = f"run {i} ({jobs} jobs): {err[-2000:]}"
        assert proc.returncode == 130, where
        assert err.count("continue with: ml-search") == 1, where
        assert "Traceback" not in err and "Exception ignored" not in err, where
        trials = trials_now(postgres_url, study)
        assert not [t.number for t in trials if t.state == TrialState.RUNNING], where
        for t in trials:
            assert len(t.intermediate_values) <= seen.get(t.number, 0) + 1, f"trial {t.number} trained on: {where}"


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path} (the test needs root): {done.stderr.strip()}")


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_full_disk_stops_the_search_with_one_line(fast_config, tmp_path, postgres_url, jobs):
    disk = tmp_path / "disk"
    _tmpfs(disk, "1m")
    try:
        base = small_base(fast_config, epochs=2, fraction=0.2)
        base["logging"]["output_dir"] = str(disk / "runs")
        (disk / "runs").mkdir()
        _fill(disk)
        config = write_config(tmp_path / "c.yaml", base, search_section(study_name="full", n_trials=20))
        proc = start_search(config, "--n-jobs", jobs, cwd=tmp_path, env={"KUBETUNE_STORAGE_URL": postgres_url})
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 1, err
        assert "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("ml-search: error:")]
        assert len(errors) == 2, err  # the results that cannot be written, and why the search stopped
        assert "No space left on device" in errors[-1] and "continue with: ml-search" in errors[-1], err
        trials = trials_now(postgres_url, "full")
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert 3 <= len(failed) <= 3 + int(jobs) - 1, [t.user_attrs.get(FAIL_REASON_ATTR) for t in trials]
        assert all("[Errno 28]" in t.user_attrs[FAIL_REASON_ATTR] for t in failed)
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.COMPLETE)]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(disk, ignore_errors=True)


def test_the_storage_is_checked_before_the_data(fast_config, tmp_path):
    """A server that does not answer is the error, not the (missing) data behind it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    base = small_base(fast_config)
    base["data"]["path"] = str(tmp_path / "missing")
    config = write_config(tmp_path / "c.yaml", base, search_section())
    done = subprocess.run([str(BIN / "ml-search"), "--config", str(config), "--storage",
                           f"postgresql://postgres@127.0.0.1:{port}/test"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"ml-search: error: cannot open storage postgresql+psycopg://postgres@127.0.0.1:{port}/test"), done.stderr
    assert "data.path" not in done.stderr
