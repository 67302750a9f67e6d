"""Optional dependencies: import one where a feature needs it, or fail with one line naming the extra.

bidfcl's core needs only torch and numpy. Reading Parquet/CSV files needs pyarrow (the ``data``
extra) and the experiment's plot needs matplotlib (the ``plot`` extra). They are imported when the
feature runs, through :func:`require`, so a missing one is reported as what to install, not as an
``ImportError`` traceback from the middle of a loader.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "require"]


class MissingDependencyError(ImportError):
    """A feature needs a package that is not importable. The message is one line: the feature, the
    package, why it could not be imported and the ``pip install 'bidfcl[EXTRA]'`` that brings it.
    A subclass of ImportError, so code that already guards an import keeps working."""


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (dotted names allowed) and return it.

    Raises:
        MissingDependencyError: ``module`` cannot be imported; the message names ``feature`` (what
            the caller was doing), the top-level package and the extra, e.g.
            ``reading Parquet/CSV files needs pyarrow, which could not be imported (No module named
            'pyarrow'): pip install 'bidfcl[data]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".", 1)[0]
        raise MissingDependencyError(
            f"bidfcl: {feature} needs {package}, which could not be imported ({exc}): "
            f"pip install 'bidfcl[{extra}]' (or pip install {package})"
        ) from None
