"""The import rule: config and the search core load without torch (the operator has none)."""

from __future__ import annotations

import subprocess
import sys

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


def test_torch_free_modules_do_not_import_torch():
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in TORCH_FREE)
        + "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]\n"
        + "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_top_level_operator_folder_is_not_a_package():
    import operator
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    assert not (root / "operator" / "__init__.py").exists()
    assert hasattr(operator, "itemgetter")  # the standard library's, not ours
