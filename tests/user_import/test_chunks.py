"""imctl user import's chunks in flight, against a fake admin API: results are counted in
file order, and a chunk that fails stops the import at its first line with the same exit
code, after the chunks already sent are answered."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from imctl.cli import main
from imctl.client import Unreachable
from imctl.commands import importing


class FakeAdmin:
    as_json = False

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.chunks: list[list[str]] = []
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0

    def call(self, method: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        names = [row["name"] for row in body["rows"]]
        with self.lock:
            self.chunks.append(names)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.fail_on in names:
                raise Unreachable("db_proxy timed out")
            return {"created": len(names) - 1, "skipped": [{"name": names[0], "reason": "taken"}]}
        finally:
            with self.lock:
                self.in_flight -= 1

    def show(self, result: Any, human: Callable[[], None]) -> None:
        human()


def write(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "users.csv"
    path.write_text("name,password\n" + "".join(f"u{i:03d},pw\n" for i in range(count)))
    return path


@pytest.mark.parametrize("fail_on", [None, "u250"])
def test_chunks_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_on: str | None) -> None:
    fake = FakeAdmin(fail_on)
    monkeypatch.setattr(importing, "admin", lambda: fake)
    result = CliRunner().invoke(main, ["user", "import", str(write(tmp_path, 1000)), "--chunk-size", "100"])
    assert fake.most_in_flight <= importing.IN_FLIGHT
    if fail_on is None:
        assert result.exit_code == 0, result.output
        assert "created 990 users, skipped 10" in result.output
        assert sorted(n for chunk in fake.chunks for n in chunk) == [f"u{i:03d}" for i in range(1000)]
    else:
        assert result.exit_code == Unreachable.exit_code
        assert "import stopped at line 202: db_proxy timed out" in result.output
        # Nothing sent after the failure was seen: at most the chunk in flight beside it.
        assert len(fake.chunks) <= 4
