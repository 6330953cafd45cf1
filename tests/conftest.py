from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from local.azurite import Azurite

# The fuzz tests' example counts: `ci` in `make test`, `soak` (HYPOTHESIS_PROFILE=soak) in `make soak`. No
# deadline: the machine is shared, and time is `make bench`'s business.
_FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=1_000, **_FUZZ)  # type: ignore[arg-type]
settings.register_profile("soak", max_examples=10_000, **_FUZZ)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A connection string to an Azurite shared by the integration tests of one run."""
    with Azurite(tmp_path_factory.mktemp("azurite")) as running:
        yield running.connection_string
