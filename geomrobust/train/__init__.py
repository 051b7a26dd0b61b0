"""Training: losses, optimizers, the train loop, evaluation and checkpoints."""

from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import checkpoint_hash as checkpoint_hash
from ._checkpoint import load_checkpoint as load_checkpoint
from ._checkpoint import load_metadata as load_metadata
from ._checkpoint import save_checkpoint as save_checkpoint
from ._loop import EvalResult as EvalResult
from ._loop import FitResult as FitResult
from ._loop import TrainState as TrainState
from ._loop import evaluate as evaluate
from ._loop import fit as fit
from ._loop import init_train_state as init_train_state
from ._loop import make_train_step as make_train_step
from ._losses import LossFn as LossFn
from ._losses import cross_entropy_loss as cross_entropy_loss
from ._losses import per_example_metrics as per_example_metrics
from ._optim import OPTIMIZERS as OPTIMIZERS
from ._optim import SCHEDULES as SCHEDULES
from ._optim import make_optimizer as make_optimizer
from ._optim import make_schedule as make_schedule
