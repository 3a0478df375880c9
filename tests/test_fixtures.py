"""Reference tests cannot pass by skipping: under CI (``ODET_CI=1``) a missing ../shared fixture fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import conftest


def test_missing_fixture_fails_under_ci_and_skips_with_a_reason_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "reference" / "nothing.safetensors"
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="missing shared fixture"):
        conftest.require(missing)
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match=r"clone \.\./shared"):
        conftest.require(missing)
    assert conftest.require(tmp_path) == tmp_path  # present: returned as is


def test_ci_script_sets_the_flag_before_the_readme_test_command() -> None:
    script = (conftest.REPO / ".ci" / "run").read_text().splitlines()
    flag = script.index("export ODET_CI=1")
    assert script[flag + 1 :] == ["python -m pytest -q"]
    assert "python -m pytest -q" in (conftest.REPO / "README.md").read_text()
