"""geomrobust.measures"""

from ._curvature import Curvatures as Curvatures
from ._curvature import normal_curvature as normal_curvature
from ._curvature import normal_curvatures as normal_curvatures
from ._curvature import principal_curvatures as principal_curvatures
from ._curvature import random_tangents as random_tangents
from ._margins import RandomSubspaceMargins as RandomSubspaceMargins
from ._margins import normalized_robustness as normalized_robustness
from ._margins import random_subspace_margins as random_subspace_margins
from ._shape_operator import shape_operator as shape_operator
from ._spectra import HessianEigs as HessianEigs
from ._spectra import SpectralQuadrature as SpectralQuadrature
from ._spectra import cure_curvature as cure_curvature
from ._spectra import hutchinson_trace as hutchinson_trace
from ._spectra import loss_hessian_eigs as loss_hessian_eigs
from ._spectra import loss_hessian_slq as loss_hessian_slq
from ._spectra import loss_hessian_trace as loss_hessian_trace
from ._spectra import slq as slq
from ._spectra import spectral_density as spectral_density
from ._subspaces import BandSummary as BandSummary
from ._subspaces import SubspaceMargins as SubspaceMargins
from ._subspaces import dct_subspaces as dct_subspaces
from ._subspaces import subspace_margins as subspace_margins
from ._subspaces import summarize_bands as summarize_bands
