"""geomrobust.measures"""
from ._margins import RandomSubspaceMargins as RandomSubspaceMargins
from ._margins import normalized_robustness as normalized_robustness
from ._margins import random_subspace_margins as random_subspace_margins
from ._subspaces import BandSummary as BandSummary
from ._subspaces import SubspaceMargins as SubspaceMargins
from ._subspaces import dct_subspaces as dct_subspaces
from ._subspaces import subspace_margins as subspace_margins
from ._subspaces import summarize_bands as summarize_bands
