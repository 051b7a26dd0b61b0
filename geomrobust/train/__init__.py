"""Training: losses, optimizers, the train loop, evaluation and checkpoints."""

from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import checkpoint_hash as checkpoint_hash
from ._checkpoint import load_checkpoint as load_checkpoint
from ._checkpoint import load_metadata as load_metadata
from ._checkpoint import save_checkpoint as save_checkpoint
