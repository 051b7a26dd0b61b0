"""geomrobust: geometric analysis of neural-network decision boundaries in JAX.

The public API (DESIGN.md section 2) is re-exported here explicitly.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("geomrobust")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+local"

from .ops import hvp as hvp
from .ops import input_grad as input_grad
from .ops import input_hessian as input_hessian
from .ops import logit_difference as logit_difference
from .ops import logit_jacobian as logit_jacobian
