"""Shared fixtures."""

import os
import tempfile

import numpy as np
import pytest

from references import kepler, kepler_exact

# Each test process gets its own compiled-code cache: runs are hermetic and never touch the
# user's ~/.cache/dxdt (tests of the cache itself point DXDT_CACHE_DIR elsewhere).
os.environ["DXDT_CACHE_DIR"] = tempfile.mkdtemp(prefix="dxdt-test-cache-")


@pytest.fixture(scope="session")
def kepler_problem():
    import dxdt

    return dxdt.ODEProblem(kepler, kepler_exact(0.0)[0], (0.0, 2 * np.pi))
