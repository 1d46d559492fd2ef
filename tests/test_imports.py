"""The import rule: the operator, and the config and search core it uses, load without torch."""

from __future__ import annotations

import json
import subprocess
import sys

# The kubetune modules the operator image ships besides those the operator imports:
# trial pods and ml-search share them, and they stay torch-free for the operator.
TORCH_FREE = [
    "kubetune.config",
    "kubetune.search.space",
    "kubetune.search.samplers",
    "kubetune.search.pruners",
    "kubetune.search.storage",
    "kubetune.search.results",
    "kubetune.search.interruption",
    "kubetune.search.single_trial",
    "kubetune.fileio",
]

# In a fresh interpreter: import every module of the operator package, then the list
# above; print what was imported and which of torch and torchvision got loaded.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import kubetune_operator
found = [m.name for m in pkgutil.walk_packages(kubetune_operator.__path__, "kubetune_operator.")]
for name in found + json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps({"operator": found, "torch": [m for m in ("torch", "torchvision") if m in sys.modules]}))
"""


def test_the_operator_and_the_search_core_do_not_import_torch():
    result = subprocess.run([sys.executable, "-c", _IMPORT_ALL, json.dumps(TORCH_FREE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout.splitlines()[-1])
    assert {"kubetune_operator.main", "kubetune_operator.reconcile",
            "kubetune_operator.builders.jobs"} <= set(imported["operator"])  # the walk reached them all
    assert imported["torch"] == []


def test_top_level_operator_folder_is_not_a_package():
    import operator
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    assert not (root / "operator" / "__init__.py").exists()
    assert hasattr(operator, "itemgetter")  # the standard library's, not ours
