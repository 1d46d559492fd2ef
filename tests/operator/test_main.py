"""``kubetune-operator``'s command line (what the Deployment runs)."""

from __future__ import annotations

from kubetune import __version__
from tests.conftest import run_cli


def test_help_lists_the_flags_a_deployment_uses():
    result = run_cli("kubetune-operator", "--help")
    assert result.returncode == 0
    for flag in ("--namespace", "--all-namespaces", "--liveness", "--trial-image", "--resync-seconds",
                 "--posting-level", "--workers"):
        assert flag in result.stdout


def test_a_scope_is_required():
    result = run_cli("kubetune-operator", env={"KUBETUNE_NAMESPACE": ""})
    assert result.returncode == 2
    assert "pass --namespace NS (repeatable) or --all-namespaces" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_namespace_and_all_namespaces_exclude_each_other():
    result = run_cli("kubetune-operator", "-n", "ml", "--all-namespaces")
    assert result.returncode == 2 and "not allowed with" in result.stderr


def test_version():
    result = run_cli("kubetune-operator", "--version")
    assert result.returncode == 0 and result.stdout.startswith(f"kubetune-operator {__version__}")


def test_the_operator_imports_no_torch():
    # The operator image has no torch: every module it loads must do without.
    modules = ["kubetune_operator.main", "kubetune_operator.handlers", "kubetune_operator.crd",
               "kubetune_operator.act", "kubetune_operator.decide", "kubetune.search.results",
                   "kubetune.search.ledger"]
    code = "".join(f"import {m}\n" for m in modules) + (
        "import sys\nbad = [m for m in ('torch', 'torchvision') if m in sys.modules]\nassert not bad, bad\n")
    result = run_cli("python", "-c", code)
    assert result.returncode == 0, result.stderr


def test_malformed_defaults_from_the_chart_stop_the_operator_with_one_line():
    result = run_cli("kubetune-operator", "--all-namespaces", env={"KUBETUNE_TRIAL_DEFAULTS": "{oops"})
    assert result.returncode == 2 and "KUBETUNE_TRIAL_DEFAULTS must be JSON" in result.stderr
