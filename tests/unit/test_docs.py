"""The configuration reference in docs/ is what the code says."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from imctl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current() -> None:
    result = CliRunner().invoke(main, ["config", "--markdown"])
    assert result.exit_code == 0, result.output
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert result.output == committed, "run: imctl config --markdown > docs/configuration.md"
