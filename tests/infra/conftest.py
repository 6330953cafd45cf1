"""What the infra tests share: a copy of `infra/` to plant a mistake in, and the edit that plants it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .bicep_checks import INFRA


@pytest.fixture()
def infra_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    return copy


def edit(path: Path, old: str, new: str) -> None:
    """Replace `old`, which must stand exactly once in the file, by `new`."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path.name}"
    path.write_text(text.replace(old, new))
