"""The harness (local clusters, sandboxes, test plumbing) stays apart from the product: nothing `pulumi up`
or the serving image runs imports it, and `make lint`'s circle check finds what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_product_never_imports_the_harness() -> None:
    import grimp

    graph = grimp.build_graph("iac", "modelprep", "serving", "harness", cache_dir=None)
    for product in ("iac", "modelprep", "serving"):
        chain = graph.find_shortest_chains(importer=product, imported="harness", as_packages=True)
        assert not chain, f"{product} reaches the harness: {sorted(chain)}"
    assert graph.find_children("harness"), "the harness package was read"


def test_stacks_import_only_the_deploy_entry_point() -> None:
    for main in REPO.glob("stacks/*/__main__.py"):
        imports = [line for line in main.read_text().splitlines() if line.startswith(("import ", "from "))]
        assert set(imports) <= {"import pulumi", "from iac.deploy.service import export_service"}, (main, imports)


def test_circle_check_fails_on_a_circle_and_passes_without(tmp_path: Path) -> None:
    package = tmp_path / "circled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circled import b\n")
    (package / "b.py").write_text("def f() -> None:\n    from circled import a  # lazy still counts\n")
    (package / "c.py").write_text("from circled import a\n")
    script = [sys.executable, str(REPO / "scripts" / "import_cycles.py"), "circled"]
    run = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 1 and "import circle: circled.a -> circled.b -> circled.a" in run.stdout, run.stdout
    assert "circled.c" not in run.stdout
    (package / "b.py").write_text("")
    run = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0 and run.stdout == "", run.stdout + run.stderr
