"""Pod Security Standards, "restricted" profile (baseline included), as a pure check.

Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ for the
latest policy version. ``restricted_violations(pod_spec)`` returns what breaks it; an
empty list means the pod would be admitted in a namespace labelled
``pod-security.kubernetes.io/enforce: restricted``. Usable on any pod spec dict, e.g.
the trial Jobs the operator builds.
"""

from __future__ import annotations

RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
VOLUME_META_KEYS = {"name"}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(spec: dict) -> list[tuple[str, dict]]:
    out = []
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            out.append((f"{field}[{container.get('name')}]", container))
    return out


def _baseline(spec: dict) -> list[str]:
    problems = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"spec.{field} must be false")
    pod_sc = spec.get("securityContext") or {}
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("spec.securityContext.windowsOptions.hostProcess must be false")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl.get('name')} is not in the safe set")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"volume {volume.get('name')} must not be hostPath")
    contexts = [("spec.securityContext", pod_sc)]
    for where, container in _containers(spec):
        sc = container.get("securityContext") or {}
        contexts.append((f"{where}.securityContext", sc))
        if sc.get("privileged"):
            problems.append(f"{where} must not be privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where}.securityContext.windowsOptions.hostProcess must be false")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            problems.append(f"{where} adds capabilities {sorted(added - BASELINE_CAPABILITIES)}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where}.securityContext.procMount must be Default")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{where} must not use hostPort {port['hostPort']}")
    for where, sc in contexts:
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            problems.append(f"{where}.seLinuxOptions are not allowed")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where}.seccompProfile must not be Unconfined")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where}.appArmorProfile must not be Unconfined")
    return problems


def restricted_violations(spec: dict) -> list[str]:
    """Every rule of the restricted profile that ``spec`` (a PodSpec dict) breaks."""
    problems = _baseline(spec)
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - VOLUME_META_KEYS
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume.get('name')} has a type outside {sorted(RESTRICTED_VOLUME_TYPES)}")
    pod_sc = spec.get("securityContext") or {}
    if pod_sc.get("runAsUser") == 0:
        problems.append("spec.securityContext.runAsUser must not be 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    for where, container in _containers(spec):
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}.securityContext.allowPrivilegeEscalation must be false")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{where} must run with runAsNonRoot: true (pod or container)")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}.securityContext.runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where} needs seccompProfile RuntimeDefault or Localhost (pod or container)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where}.securityContext.capabilities.drop must contain ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            problems.append(f"{where} may add only NET_BIND_SERVICE, but adds {sorted(extra)}")
    return problems
