"""The documentation site: generated references current, every link whole, the site builds.

scripts/gen_docs.py writes docs/reference/{config,cli,studyjob}.md from the config
models, the CLI parsers and the CRD; a field or flag changed without regenerating
fails here, naming the stale page.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.config import Config

ROOT = Path(__file__).resolve().parents[1]


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()


def test_generated_references_are_current():
    result = subprocess.run([sys.executable, "scripts/gen_docs.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_check_names_a_stale_page(tmp_path, monkeypatch, capsys):
    for name, render in gen_docs.PAGES.items():
        (tmp_path / name).write_text(render(), encoding="utf-8")
    (tmp_path / "cli.md").write_text("stale\n", encoding="utf-8")
    monkeypatch.setattr(gen_docs, "REFERENCE", tmp_path)
    assert gen_docs.main(["--check"]) == 1
    assert "cli.md" in capsys.readouterr().err
    assert (tmp_path / "cli.md").read_text(encoding="utf-8") == "stale\n"
    assert gen_docs.main([]) == 0
    assert gen_docs.main(["--check"]) == 0


def _dotted_keys(model, prefix=""):
    for prefix_, section in gen_docs._sections(model, prefix):
        for name in section.model_fields:
            yield f"{prefix_}{name}"


def test_the_config_reference_names_every_key():
    page = gen_docs.config_page()
    missing = [key for key in _dotted_keys(Config) if f"`{key}`" not in page]
    assert not missing
    assert "`search.pruner.reduction_factor`" in page
    assert "`search.search_space.<key>.low`" in page


def test_the_cli_reference_names_every_flag():
    import importlib as imp

    page = gen_docs.cli_page()
    for command, module in gen_docs.COMMANDS:
        assert f"## {command}\n" in page
        parser = imp.import_module(module).build_parser()
        for action in parser._actions:
            for flag in action.option_strings:
                assert f"`{flag}`" in page, f"{command} {flag}"


def test_the_studyjob_reference_follows_the_crd():
    page = gen_docs.studyjob_page()
    for field in ("spec.trials.parallelism", "spec.trials.startupTimeoutSeconds", "spec.cleanup.deleteStudy",
                  "status.trials.preempted", "status.conditions[].reason"):
        assert f"`{field}`" in page


def _markdown_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_links_point_at_files_that_exist():
    links = [link for link in _markdown_links(ROOT / "README.md") if "://" not in link]
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing


def _quick_start_block(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return re.search(r"```bash\n(.*?)```", text[text.index("Quick Start\n"):], re.DOTALL).group(1)


def test_getting_started_prints_the_readme_quick_start():
    # tests/test_quick_start.py runs the README's block; the docs print the same one.
    assert _quick_start_block(ROOT / "docs" / "getting-started.md") == _quick_start_block(ROOT / "README.md")


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert [p for p in pages if f" {p}\n" not in nav] == []


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
