"""Run a pod's container as a local process that sees the pod's filesystem.

Each container runs in its own mount namespace (``unshare --mount``): every volume
is bind-mounted at its real ``mountPath`` (read-only where the pod says so), so the
command runs exactly as written in the pod spec, with no path rewriting. It runs as
the pod's ``runAsUser`` with the pod's ``fsGroup`` as a supplementary group, so a
trainer that writes where a non-root user may not fails here as it would on a node.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
# Folders every container sees at these paths; created empty on the host once.
_made_mountpoints: set[str] = set()


@dataclass
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass
class Process:
    """What a container runs: argv as the pod spec writes it, env, mounts, identity."""

    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    uid: int | None = None
    gid: int | None = None
    groups: list[int] = field(default_factory=list)
    workdir: str = "/"


def resolve_program(name: str) -> str:
    """The image's programs are the test environment's: ``python`` and the console scripts."""
    if name in ("python", "python3"):
        return sys.executable
    local = BIN / name
    if "/" not in name and local.exists():
        return str(local)
    return shutil.which(name) or name


def _mountpoint(target: str) -> None:
    if target in _made_mountpoints:
        return
    if not os.path.isdir(target):
        os.makedirs(target, exist_ok=True)
    _made_mountpoints.add(target)


def hidden_interpreter() -> tuple[str, str] | None:
    """``(folder, child)`` when the interpreter lies under a folder other users cannot
    enter (pyenv under ``/root``): ``folder`` and the ``child`` of it on the path."""
    real = Path(os.path.realpath(sys.executable))
    for parent in reversed(real.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            child = real.parts[len(parent.parts)]
            return str(parent), str(parent / child)
    return None


def _interpreter_mounts() -> list[str]:
    """In the container only: the interpreter's folder is reachable, as it is in an image.
    The closed folder is covered by an empty tmpfs that holds just the interpreter's tree."""
    hidden = hidden_interpreter()
    if hidden is None:
        return []
    folder, child = (shlex.quote(p) for p in hidden)
    stage = shlex.quote(f"{STAGE}/interpreter")
    return [f"mount --bind {child} {stage}", f"mount -t tmpfs -o mode=0755 tmpfs {folder}",
            f"mkdir -p {child}", f"mount --move {stage} {child}"]


def make_stage() -> None:
    """Empty folders the container scripts park mounts on (never written to)."""
    for name in ("interpreter", "0", "1"):
        os.makedirs(f"{STAGE}/{name}", exist_ok=True)


def _covered(process: Process) -> list[str]:
    """The checkout and the venv (the image's software) where a volume would cover them,
    as ``/tmp`` covers a checkout under /tmp."""
    targets = [m.target for m in process.mounts]
    software = {str(ROOT), sys.prefix}
    return sorted(p for p in software if any(p == t or p.startswith(t.rstrip("/") + "/") for t in targets))


STAGE = "/var/tmp/kubetune-kubelet-stage"
ROOT = Path(__file__).resolve().parents[2]


def shell_script(process: Process) -> str:
    """The ``sh`` script run inside the new mount namespace: mount, drop to the user, exec."""
    lines = ["set -e"]
    if process.uid is not None:
        lines += _interpreter_mounts()
    covered = _covered(process)
    for index, path in enumerate(covered):  # set aside before the volumes cover them ...
        lines.append(f"mount --bind {shlex.quote(path)} {shlex.quote(f'{STAGE}/{index}')}")
    # Shorter targets first, so /results/x lands inside /results and not under it.
    for mount in sorted(process.mounts, key=lambda m: m.target.count("/")):
        source, target = shlex.quote(str(mount.source)), shlex.quote(mount.target)
        lines.append(f"mount --bind {source} {target}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    for index, path in enumerate(covered):  # ... and put back at their own paths
        lines += [f"mkdir -p {shlex.quote(path)}", f"mount --move {shlex.quote(f'{STAGE}/{index}')} {shlex.quote(path)}"]
    lines.append(f"cd {shlex.quote(process.workdir)} 2>/dev/null || cd /")
    argv = [resolve_program(process.argv[0]), *process.argv[1:]]
    command = " ".join(shlex.quote(arg) for arg in argv)
    if process.uid is not None:
        gid = process.gid if process.gid is not None else process.uid
        groups = ",".join(str(g) for g in process.groups) or str(gid)
        command = (f"exec setpriv --reuid={process.uid} --regid={gid} --groups={groups} "
                   f"--inh-caps=-all --bounding-set=-all --no-new-privs -- {command}")
    else:
        command = f"exec {command}"
    lines.append(command)
    return "\n".join(lines)


def start(process: Process, log_path: Path) -> subprocess.Popen:
    """Start the container's process in a session of its own (so a signal reaches all of it).

    Sources are bound before ``/tmp`` is covered, so they must not live under ``/tmp``.
    """
    make_stage()
    for mount in process.mounts:
        _mountpoint(mount.target)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", shell_script(process)],
            env=process.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def can_run_as(uid: int) -> bool:
    """Whether a container running as ``uid`` can run this Python and start it again from
    inside (the checkout and the venv must be readable by that user)."""
    nested = "import subprocess, sys, kubetune; subprocess.run([sys.executable, '-c', 'pass'], check=True)"
    make_stage()
    script = shell_script(Process(argv=["python", "-c", nested], env=dict(os.environ), uid=uid))
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                            capture_output=True)
    return result.returncode == 0


def share_with_group(path: Path, gid: int) -> None:
    """What the kubelet does for ``fsGroup`` (policy OnRootMismatch): group gid,
    group-writable, setgid folders."""
    if path.stat().st_gid == gid:
        return
    for root, dirs, files in os.walk(path):
        for target in [root, *(os.path.join(root, name) for name in [*dirs, *files])]:
            try:
                os.chown(target, -1, gid)
                mode = os.stat(target).st_mode
                os.chmod(target, mode | (0o2070 if os.path.isdir(target) else 0o060))
            except FileNotFoundError:
                continue
