"""Atomic writes: flushed to disk before the rename, with an ordinary file's mode."""

from __future__ import annotations

import os
import stat

import pytest

from kubetune.fileio import unwritable_reason, write_bytes_atomic


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_a_written_file_has_the_mode_of_an_ordinary_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "last.pt", b"weights")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "last.pt").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_the_data_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    target, data = tmp_path / "last.pt", b"x" * 100_000
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append((stat.S_ISREG(os.fstat(fd).st_mode), os.fstat(fd).st_size, target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_bytes_atomic(target, data)
    assert synced[0] == (True, len(data), False)  # the whole temporary file, not yet renamed
    assert target.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unwritable_reason_names_the_first_existing_folder(tmp_path, monkeypatch):
    assert unwritable_reason(tmp_path / "runs" / "deep") is None  # missing folders get made
    (tmp_path / "afile").write_text("x")
    assert unwritable_reason(tmp_path / "afile" / "runs") == f"{tmp_path / 'afile'} is a file, not a folder"
    real_exists = type(tmp_path).exists

    def exists(self, *args, **kwargs):  # what a folder this user may not enter does
        if self.name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_exists(self, *args, **kwargs)
    monkeypatch.setattr(type(tmp_path), "exists", exists)
    assert unwritable_reason(tmp_path / "locked" / "runs") == f"{tmp_path / 'locked'}: Permission denied"


def test_unwritable_reason_tries_a_folder_where_permission_bits_say_yes(tmp_path):
    # /proc: writable by its bits for root, yet it takes no folders
    assert unwritable_reason("/proc/kubetune-runs").startswith("/proc ")
    assert unwritable_reason(tmp_path / "runs") is None
    assert list(tmp_path.iterdir()) == []  # the probe is gone
