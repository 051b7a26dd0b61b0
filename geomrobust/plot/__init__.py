"""geomrobust.plot"""

from ._margins import plot_margin_distribution as plot_margin_distribution
from ._margins import plot_perturbation_grid as plot_perturbation_grid
from ._margins import plot_subspace_profile as plot_subspace_profile
