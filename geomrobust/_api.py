"""The public API of ``import geomrobust as gr``, imported on first use of a ``gr.`` name.

Importing this module imports JAX and every layer of the package; ``geomrobust/__init__.py``
imports it lazily (its ``__getattr__``), so that ``import geomrobust`` and the command line's
``--help`` start without JAX (README "Command line"). Add a new public name here.
"""

from . import data as data
from . import engine as engine
from . import io as io
from . import measures as measures
from . import models as models
from . import ops as ops
from . import parallel as parallel
from . import search as search
from . import train as train
from ._status import Status as Status

# data
from .data import ArrayDataset as ArrayDataset
from .data import DatasetNotFoundError as DatasetNotFoundError
from .data import dct_flip as dct_flip
from .data import directional_dataset as directional_dataset
from .data import iterate_batches as iterate_batches
from .data import load_dataset as load_dataset
from .data import low_pass as low_pass

# measures
from .measures import Curvatures as Curvatures
from .measures import HessianEigs as HessianEigs
from .measures import MarginSignature as MarginSignature
from .measures import NADs as NADs
from .measures import NormalCurvatures as NormalCurvatures
from .measures import RandomSubspaceMargins as RandomSubspaceMargins
from .measures import ShapeOperator as ShapeOperator
from .measures import SharedDirections as SharedDirections
from .measures import Slice as Slice
from .measures import SubspaceMargins as SubspaceMargins
from .measures import Thickness as Thickness
from .measures import boundary_slice as boundary_slice
from .measures import boundary_thickness as boundary_thickness
from .measures import dct_subspaces as dct_subspaces
from .measures import hutchinson_trace as hutchinson_trace
from .measures import loss_hessian_eigs as loss_hessian_eigs
from .measures import margin_signature as margin_signature
from .measures import nads as nads
from .measures import normal_curvature as normal_curvature
from .measures import normalized_robustness as normalized_robustness
from .measures import principal_curvatures as principal_curvatures
from .measures import random_subspace_margins as random_subspace_margins
from .measures import shape_operator as shape_operator
from .measures import shared_directions as shared_directions
from .measures import subspace_margins as subspace_margins

# models
from .models import Classifier as Classifier
from .models import PureApply as PureApply
from .models import as_classifier as as_classifier
from .models import create_model as create_model
from .models import pure_apply as pure_apply

# operators
from .ops import hvp as hvp
from .ops import hvp_operator as hvp_operator
from .ops import input_grad as input_grad
from .ops import input_hessian as input_hessian
from .ops import logit_difference as logit_difference
from .ops import logit_jacobian as logit_jacobian

# boundary search and attacks
from .search import AttackResult as AttackResult
from .search import BoundaryPoints as BoundaryPoints
from .search import DirectionalMargins as DirectionalMargins
from .search import MarginResult as MarginResult
from .search import MaskingChecks as MaskingChecks
from .search import MinimalMargin as MinimalMargin
from .search import RobustAccuracy as RobustAccuracy
from .search import SparseFoolResult as SparseFoolResult
from .search import UniversalPerturbation as UniversalPerturbation
from .search import apgd as apgd
from .search import cw_l2 as cw_l2
from .search import deepfool as deepfool
from .search import deepfool_dataset as deepfool_dataset
from .search import fgsm as fgsm
from .search import fmn as fmn
from .search import margin_along as margin_along
from .search import masking_checks as masking_checks
from .search import minimal_margin as minimal_margin
from .search import pgd as pgd
from .search import refine_boundary as refine_boundary
from .search import robust_accuracy as robust_accuracy
from .search import sparsefool as sparsefool
from .search import square_attack as square_attack
from .search import universal_perturbation as universal_perturbation

# training
from .train import Checkpoint as Checkpoint
from .train import load_checkpoint as load_checkpoint
from .train import make_loss as make_loss
from .train import save_checkpoint as save_checkpoint
