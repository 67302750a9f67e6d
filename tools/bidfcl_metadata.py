"""scikit-build-core metadata provider: the wheel's ``dependencies`` with torch pinned to the build's.

bidfcl's extension links torch's C++ libraries, whose ABI changes between minor releases, so a built
wheel works only under the torch ``X.Y.*`` it was compiled against. pyproject.toml declares
``dependencies`` dynamic and names this module (``[tool.scikit-build.metadata.dependencies]``);
scikit-build-core calls :func:`dynamic_metadata` while it writes the metadata, in the interpreter
that runs the build, which with ``--no-build-isolation`` is the one whose torch CMake compiles
against (CMake asks ``Python_EXECUTABLE``, the same interpreter, for torch's path). The result is
``torch==X.Y.*`` followed by the other requirements listed under ``requires`` there.

The torch version is read from the installed distribution's metadata (no ``import torch``), so a
missing torch is reported before any compiling, with what to do.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any, Mapping

__all__ = ["dynamic_metadata", "torch_requirement"]


def torch_requirement(torch_version: str) -> str:
    """``torch==X.Y.*`` for a torch version such as ``2.13.0+cpu`` (the local label and the patch
    release do not change the C++ ABI the extension is compiled against)."""
    m = re.match(r"(\d+)\.(\d+)", torch_version)
    if m is None:
        raise ValueError(f"bidfcl build: cannot read major.minor from the installed torch version {torch_version!r}")
    return f"torch=={m.group(1)}.{m.group(2)}.*"


def dynamic_metadata(field: str, settings: Mapping[str, Any]) -> list[str]:
    """scikit-build-core's provider hook: ``[torch==X.Y.*, *settings["requires"]]`` for ``dependencies``."""
    if field != "dependencies":
        raise ValueError(f"bidfcl build: tools/bidfcl_metadata.py provides 'dependencies', not {field!r}")
    requires = settings.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise TypeError(
            "bidfcl build: [tool.scikit-build.metadata.dependencies] requires must be a list of "
            f"requirement strings, got {requires!r}"
        )
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "bidfcl build: torch is not installed in the build's Python; install torch first and "
            "build with `pip install --no-build-isolation .` (or `pip wheel --no-build-isolation`), "
            "so the extension and the wheel's torch pin come from the torch you will run"
        ) from None
    return [torch_requirement(version), *requires]
