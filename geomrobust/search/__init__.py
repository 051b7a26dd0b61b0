"""Boundary searches: DeepFool (any Lp norm, subspaces), boundary refinement, ray bisection,
FGSM / PGD, SparseFool and universal perturbations."""

from ._attacks import AttackResult as AttackResult
from ._attacks import RobustAccuracy as RobustAccuracy
from ._attacks import fgsm as fgsm
from ._attacks import pgd as pgd
from ._attacks import robust_accuracy as robust_accuracy
from ._boundary import BisectionInfo as BisectionInfo
from ._boundary import BisectionState as BisectionState
from ._boundary import BoundaryPoints as BoundaryPoints
from ._boundary import bisection_init as bisection_init
from ._boundary import bisection_step as bisection_step
from ._boundary import refine_boundary as refine_boundary
from ._deepfool import DeepFoolInfo as DeepFoolInfo
from ._deepfool import DeepFoolState as DeepFoolState
from ._deepfool import MarginResult as MarginResult
from ._deepfool import deepfool as deepfool
from ._deepfool import deepfool_init as deepfool_init
from ._deepfool import deepfool_result as deepfool_result
from ._deepfool import deepfool_step as deepfool_step
from ._driver import deepfool_dataset as deepfool_dataset
from ._ray import DirectionalMargins as DirectionalMargins
from ._ray import margin_along as margin_along
from ._sparsefool import SparseFoolResult as SparseFoolResult
from ._sparsefool import linear_solver as linear_solver
from ._sparsefool import sparsefool as sparsefool
from ._universal import UniversalPerturbation as UniversalPerturbation
from ._universal import universal_perturbation as universal_perturbation
