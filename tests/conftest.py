"""Shared fixtures."""

import numpy as np
import pytest

from references import kepler, kepler_exact


@pytest.fixture(scope="session")
def kepler_problem():
    import dxdt

    return dxdt.ODEProblem(kepler, kepler_exact(0.0)[0], (0.0, 2 * np.pi))
