"""Analyses: the dataset-level measurements behind the CLI, the report and the scripts.

Between the measures (:mod:`geomrobust.measures`, :mod:`geomrobust.search`) and their
front ends in the data flow: one module per analysis, each exposing

    compute(classifier, data, settings, *, store=None, ..., devices=None, progress=None)
        -> AnalysisResult(arrays: dict[str, np.ndarray], summary: dict)

with ``settings`` a frozen dataclass of the options that change the numbers (defaults are
those of the matching ``geomrobust`` subcommand) and a JSON-ready ``summary`` that counts
unconverged and excluded examples explicitly. Each measurement enters the engine's chunk
loop (:func:`geomrobust.engine.map_chunks`) once: an analysis hands the whole dataset and
its :class:`geomrobust.io.ChunkStore` to the driver (``deepfool_dataset``,
``subspace_margins``, ``minimal_margin``, ... take ``store=``), or runs its own per-chunk
program or pipeline through it, so a run resumes the same way in every analysis.

* :mod:`~geomrobust.analyses.margins`: DeepFool, DCT bands, random subspaces, PGD robust
  accuracy, SparseFool;
* :mod:`~geomrobust.analyses.curvature`: boundary points, principal curvatures, shared
  directions, fooling rates, loss-Hessian spectra;
* :mod:`~geomrobust.analyses.slices`: 2-D slices of the boundary;
* :mod:`~geomrobust.analyses.diagnose`: thickness, margin signature, local linearity, ρ;
* :mod:`~geomrobust.analyses.nads`: neural anisotropy directions, Fourier accuracy map;
* :func:`boundary_points`: the DeepFool -> bisection -> validity pipeline they share.
"""

from . import curvature as curvature
from . import diagnose as diagnose
from . import margins as margins
from . import nads as nads
from . import slices as slices
from ._boundary import BoundarySet as BoundarySet
from ._boundary import boundary_points as boundary_points
from ._common import AnalysisResult as AnalysisResult
from ._common import predict as predict
from ._common import settings_record as settings_record
from ._common import summarize as summarize
from .curvature import CurvatureSettings as CurvatureSettings
from .diagnose import DiagnoseSettings as DiagnoseSettings
from .margins import MarginSettings as MarginSettings
from .nads import Architecture as Architecture
from .nads import NADSettings as NADSettings
from .slices import SliceSettings as SliceSettings
