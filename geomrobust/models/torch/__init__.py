"""PyTorch models: any ``nn.Module`` through torchax (:func:`from_torch_module`, the
``geomrobust[torch]`` extra)."""

from ._module import CustomAutogradWarning as CustomAutogradWarning
from ._module import from_torch_module as from_torch_module
