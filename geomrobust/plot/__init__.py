"""Figures (matplotlib only): every function takes arrays (NumPy or JAX), does no JAX
computation, labels its axes and returns ``(fig, ax)`` (or ``(fig, axes)``). Functions taking
a mapping ``{label: arrays}`` draw several models in one figure, one colour each (``C0``,
``C1``, ... in order); the report draws every figure through them."""

from ._curvature import plot_curvature_magnitudes as plot_curvature_magnitudes
from ._curvature import plot_curvature_spectrum as plot_curvature_spectrum
from ._curvature import plot_eigenvalue_spectra as plot_eigenvalue_spectra
from ._curvature import plot_shared_directions as plot_shared_directions
from ._curvature import plot_singular_values as plot_singular_values
from ._curvature import plot_spectral_density as plot_spectral_density
from ._margins import plot_band_margins as plot_band_margins
from ._margins import plot_ecdf as plot_ecdf
from ._margins import plot_histograms as plot_histograms
from ._margins import plot_margin_distribution as plot_margin_distribution
from ._margins import plot_perturbation_grid as plot_perturbation_grid
from ._margins import plot_subspace_profile as plot_subspace_profile
from ._margins import plot_subspace_ratios as plot_subspace_ratios
from ._nads import plot_accuracy_map as plot_accuracy_map
from ._nads import plot_image_grid as plot_image_grid
from ._nads import plot_nads as plot_nads
from ._robustness import plot_corruption_accuracy as plot_corruption_accuracy
from ._robustness import plot_fourier_heat_maps as plot_fourier_heat_maps
from ._robustness import plot_noise_errors as plot_noise_errors
from ._saliency import plot_alignment as plot_alignment
from ._saliency import plot_class_synthesis as plot_class_synthesis
from ._saliency import plot_saliency as plot_saliency
from ._slices import plot_loss_surface as plot_loss_surface
from ._slices import plot_slice as plot_slice
