"""The room table is enforced: ``lint-imports`` (run on the tree by ``scripts/test``) catches a
deliberate breach, and every room of ``monitor/`` has a row in the table and a layer.

Each breach is planted in a copy of the packages, so the check runs on exactly the code a
developer might write, in well under a second per case.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def top_level_rooms() -> set[str]:
    """Every module and package directly in ``monitor/`` but the package's own files."""
    package = ROOT / "monitor"
    modules = {path.stem for path in package.glob("*.py")} - {"__init__", "__main__"}
    packages = {path.name for path in package.iterdir() if (path / "__init__.py").is_file()}
    return modules | packages


def rooms_in_the_table() -> set[str]:
    """The top-level rooms the first column of DEVELOPERS.md's room table names."""
    text = (ROOT / "DEVELOPERS.md").read_text()
    table = text.partition("## Layout and who may import what")[2].partition("House rules:")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    paths = [path for row in rows for path in re.findall(r"`([^`]+)`", row.split("|")[1])]
    assert all((ROOT / path).exists() for path in paths), paths
    return {
        Path(path).parts[1].removesuffix(".py") for path in paths if path.startswith("monitor/")
    }


def rooms_in_the_layers() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [
        contract["layers"]
        for contract in config["tool"]["importlinter"]["contracts"]
        if contract["type"] == "layers"
    ]
    names = {name.strip() for layer in layers for name in layer.split("|")}
    return {name.removeprefix("monitor.") for name in names} - {"__main__"}


def test_every_room_has_a_row_in_the_table_and_a_layer() -> None:
    rooms = top_level_rooms()
    assert rooms_in_the_table() == rooms
    assert rooms_in_the_layers() == rooms


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def copy_of_the_packages(tmp_path: Path) -> Path:
    for package in ("monitor", "simulators"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("module", "breach", "reported"),
    [
        (
            "monitor/mqtt/topics.py",
            "from monitor.config import SiteConfig",
            "monitor.mqtt is not allowed to import monitor.config",
        ),
        (
            "monitor/config.py",
            "from monitor.alerts.rules import RuleSet",
            "monitor.config is not allowed to import monitor.alerts",
        ),
        (
            "monitor/models.py",
            "import monitor.clock",
            "monitor.models is not allowed to import monitor.clock",
        ),
        (
            "monitor/service.py",
            "import aiomqtt",
            "monitor.service is not allowed to import aiomqtt",
        ),
        (
            "monitor/alerts/engine.py",
            "import simulators.physiology",
            "monitor.alerts is not allowed to import simulators",
        ),
    ],
)
def test_a_deliberate_breach_is_caught(
    tmp_path: Path, module: str, breach: str, reported: str
) -> None:
    tree = copy_of_the_packages(tmp_path)
    target = tree / module
    target.write_text(target.read_text() + f"\n{breach}\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    broken = result.stdout.partition("Broken contracts")[2]
    assert reported in broken, result.stdout


@pytest.mark.timeout(60)
def test_the_configuration_loads_no_outside_library_of_another_room() -> None:
    """The config builds the settings of mqtt and storage without loading their libraries, so
    ``check-config`` starts as fast as before it built them."""
    libraries = ("influxdb_client", "aiohttp", "aiomqtt", "amqtt", "bleak", "numpy")
    code = f"import sys, monitor.config; print([m for m in {libraries!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]"
