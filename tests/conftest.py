"""Shared test fixtures. Tests run on the CPU and use small models and small images."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the scripts are modules at the project root

FLOWERS_MINI = ROOT.parent / "shared" / "datasets" / "flowers-mini"


@pytest.fixture(scope="session")
def flowers_mini() -> Path:
    """The 120 real photos in 5 classes; skipped when absent, except under CI, where they must be."""
    if not FLOWERS_MINI.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the test photos are missing: {FLOWERS_MINI}")
        pytest.skip(f"test photos not found at {FLOWERS_MINI}")
    return FLOWERS_MINI
