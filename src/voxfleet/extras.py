"""The optional extras of the voxfleet package, and the check that one is installed.

``voxfleet[ray]`` brings Ray, for ``backend = "ray"`` (``voxfleet serve --backend ray``), the
local test cluster and ``voxfleet bench ray``; ``voxfleet[plots]`` brings matplotlib, for
``voxfleet simulate --plot``. Nothing on the default path (``voxfleet serve`` on one machine,
the other commands) imports either: the modules that need them import them where they use them,
after :func:`require_extra` has named the extra to install if it is missing.
"""

from __future__ import annotations

import importlib.util

from voxfleet.exceptions import ExtraNotInstalled

EXTRAS = {"ray": "ray", "plots": "matplotlib"}  # extra -> the module it provides


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`ExtraNotInstalled` unless the module of `extra` can be imported (it is not
    imported here: finding it is enough)."""
    module = EXTRAS[extra]
    if importlib.util.find_spec(module) is None:
        raise ExtraNotInstalled(feature, module, extra)
