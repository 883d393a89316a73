"""docs/mqtt.md is generated from the MQTT contract; this fails as soon as they drift apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.mqtt.contract import TOPICS
from monitor.mqtt.doc import REGENERATE, render
from monitor.mqtt.payloads import ERROR_DESCRIPTIONS, ErrorCode

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "mqtt.md"


def test_the_document_is_what_the_code_renders() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"docs/mqtt.md is out of date with monitor/mqtt; regenerate it with:  {REGENERATE}"
    )


def test_every_topic_has_examples_and_schemas_that_validate() -> None:
    text = render()
    blocks = [block.split("```")[0] for block in text.split("```json\n")[1:]]
    one_liners = [line for block in blocks for line in block.splitlines() if line.startswith("{")]
    schemas = [json.loads(block) for block in blocks if block.startswith("{\n")]
    titles = [schema["title"] for schema in schemas]
    for spec in TOPICS:
        assert f"### {spec.name}" in text
        for model in spec.payloads:
            assert model.__name__ in titles
            assert any(_parses(model, line) for line in one_liners), model.__name__


def test_every_error_code_is_documented() -> None:
    text = render()
    assert set(ERROR_DESCRIPTIONS) == set(ErrorCode)
    for code in ErrorCode:
        assert f"| `{code.value}` |" in text


def _parses(model: type, line: str) -> bool:
    try:
        model.model_validate_json(line)  # type: ignore[attr-defined]
    except ValueError:
        return False
    return True


@pytest.mark.timeout(60)
def test_the_regenerate_command_prints_the_document() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor.mqtt.doc"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render()
