"""Model zoo (Flax NNX: MLP, LeNet, ResNet), the :class:`Classifier` pytree and its adapters."""

from ._adapter import as_logits_fn as as_logits_fn
from ._adapter import pure_apply as pure_apply
from ._classifier import Classifier as Classifier
from ._classifier import StaticFunction as StaticFunction
from ._classifier import as_classifier as as_classifier
from ._layers import ACTIVATIONS as ACTIVATIONS
from ._layers import SMOOTH_ACTIVATIONS as SMOOTH_ACTIVATIONS
from ._layers import conv2d_im2col as conv2d_im2col
from ._layers import freeze_config as freeze_config
from ._layers import init_kwargs as init_kwargs
from ._layers import thaw_config as thaw_config
from ._lenet import LeNet as LeNet
from ._mlp import MLP as MLP
from ._normalized import Normalized as Normalized
from ._registry import MODELS as MODELS
from ._registry import create_model as create_model
from ._registry import model_config as model_config
from ._registry import model_from_config as model_from_config
from ._registry import register_model as register_model
from ._resnet import ResNet as ResNet
from ._splits import layer_splits as layer_splits
from ._torch_import import from_torch as from_torch
from ._torch_import import torch_state_dict_keys as torch_state_dict_keys
from .torch import CustomAutogradWarning as CustomAutogradWarning
from .torch import from_torch_module as from_torch_module
