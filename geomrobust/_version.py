"""The installed version of the package (``geomrobust.__version__``), importable by every
module without importing the package's namespace (no import circle)."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

__all__ = ["__version__"]

try:
    __version__ = _version("geomrobust")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+local"
