from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.azurite import Azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A connection string to an Azurite shared by the integration tests of one run."""
    with Azurite(tmp_path_factory.mktemp("azurite")) as running:
        yield running.connection_string
