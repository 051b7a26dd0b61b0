"""Differential operators on any JAX classifier, and chunked batching over examples."""

from ._batched import LogitDifference as LogitDifference
from ._batched import LogitGradients as LogitGradients
from ._batched import batch_class_gradients as batch_class_gradients
from ._batched import batch_hvp as batch_hvp
from ._batched import batch_logit_difference_grads as batch_logit_difference_grads
from ._batched import batch_logit_jacobian as batch_logit_jacobian
from ._chunk import chunked_vmap as chunked_vmap
from ._chunk import map_in_chunks as map_in_chunks
from ._chunk import pad_to_multiple as pad_to_multiple
from ._diff import hvp as hvp
from ._diff import hvp_operator as hvp_operator
from ._diff import input_grad as input_grad
from ._diff import input_hessian as input_hessian
from ._diff import logit_difference as logit_difference
from ._diff import logit_jacobian as logit_jacobian
from ._diff import single_example as single_example
