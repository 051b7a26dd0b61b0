"""geomrobust.plot"""

from ._curvature import plot_curvature_spectrum as plot_curvature_spectrum
from ._curvature import plot_singular_values as plot_singular_values
from ._curvature import plot_spectral_density as plot_spectral_density
from ._margins import plot_margin_distribution as plot_margin_distribution
from ._margins import plot_perturbation_grid as plot_perturbation_grid
from ._margins import plot_subspace_profile as plot_subspace_profile
from ._nads import plot_accuracy_map as plot_accuracy_map
from ._nads import plot_image_grid as plot_image_grid
from ._nads import plot_nads as plot_nads
from ._slices import plot_loss_surface as plot_loss_surface
from ._slices import plot_slice as plot_slice
