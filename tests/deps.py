"""Optional dependencies of the suite (vLLM, Ray): skip where one is missing on a developer's
machine, fail in CI, which installs them all (``make test`` does too). A skip must never be
how CI passes, so every such skip goes through ``require`` and carries ``MISSING``; the hook in
conftest.py turns any of them into a failed run when ``CI`` is set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

MISSING = "missing dependency"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require(module: str, extra: str) -> pytest.MarkDecorator:
    """A mark that skips a test when ``module`` does not import (pip install 'insieme[extra]')."""
    return pytest.mark.skipif(
        not installed(module),
        reason=f"{MISSING}: {module} (pip install 'insieme[{extra}]', or make test)",
    )


def require_folder(folder: Path, what: str) -> pytest.MarkDecorator:
    """A mark that skips a test when ``folder`` (a package installed aside) is missing."""
    return pytest.mark.skipif(not folder.is_dir(),
                              reason=f"{MISSING}: {what} in {folder} (make backends)")
