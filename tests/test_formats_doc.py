"""docs/formats.md is generated from the models; this fails as soon as they drift apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.formats_doc import REGENERATE, render
from monitor.models import AlarmEvent, DeviceEvent, DoseMarker, Reading

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "formats.md"


def test_the_document_is_what_the_code_renders() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"docs/formats.md is out of date with the models; regenerate it with:  {REGENERATE}"
    )


def test_every_example_line_is_a_valid_model() -> None:
    models = (Reading, AlarmEvent, DeviceEvent, DoseMarker)
    blocks = render().split("```json\n")[1:]
    examples = [line for block in blocks for line in block.split("```")[0].splitlines()]
    one_liners = [line for line in examples if line.startswith("{") and line.endswith("}")]
    for model in models:
        assert any(_parses(model, line) for line in one_liners), model.__name__
    schemas = [json.loads(block.split("```")[0]) for block in blocks if block.startswith("{\n")]
    assert [schema["title"] for schema in schemas] == [m.__name__ for m in models]


def _parses(model: type[Reading | AlarmEvent | DeviceEvent | DoseMarker], line: str) -> bool:
    try:
        model.model_validate_json(line)
    except ValueError:
        return False
    return True


@pytest.mark.timeout(60)
def test_the_regenerate_command_prints_the_document() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor.formats_doc"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render()
