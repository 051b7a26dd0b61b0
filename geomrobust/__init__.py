"""geomrobust: geometric analysis of neural-network decision boundaries in JAX.

The public API (README "Library", docs/methods.md) is listed explicitly in
:mod:`geomrobust._api` and loaded on the first use of a ``gr.`` name, so ``import geomrobust``
(and ``geomrobust --help``) does not import JAX; the subpackages (``geomrobust.data``,
``.models``, ``.ops``, ``.engine``, ``.search``, ``.measures``, ``.train``, ``.plot``) hold
the rest, one layer each, in the order of the data flow; ``gr.plot`` and the front ends are
imported on first use.
"""

import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

if TYPE_CHECKING:  # the names of gr., for type checkers and editors
    from ._api import *  # noqa: F403

#: subpackages loaded on first use, not with the public API (matplotlib, the front ends)
_FRONT_ENDS = ("plot", "report", "analyses", "cli")


def __getattr__(name: str):
    """``gr.<name>`` on first use: the front ends (``gr.plot``, ``gr.report``,
    ``gr.analyses``, ``gr.cli``) as themselves, every other public name from
    :mod:`geomrobust._api`, whose import loads JAX and the library layers (once)."""
    if name in _FRONT_ENDS:
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    api = importlib.import_module(f"{__name__}._api")
    public = {k: v for k, v in vars(api).items() if not k.startswith("_")}
    globals().update(public)  # later lookups do not come back here
    if name == "__all__":
        return sorted(public)
    if name in public:
        return public[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    api = importlib.import_module(f"{__name__}._api")
    return sorted(set(globals()) | {k for k in vars(api) if not k.startswith("_")})
