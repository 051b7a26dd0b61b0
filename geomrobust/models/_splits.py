"""A model cut at a hidden layer: ``(features, head)`` classifiers with ``head(features(x))``
equal to the logits, for layer-wise measurements (the margin signature of Jiang et al. 2019).

Both halves are :class:`~geomrobust.models.Classifier` pytrees holding the model's current
weights as traced leaves; their static part names the model's graph definition and the cut,
so the programs that use them compile once per architecture and layer.
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

from ._classifier import Classifier, _Key
from ._layers import pool2d
from ._lenet import LeNet
from ._mlp import MLP

__all__ = ["layer_splits"]


def _mlp_stages(m) -> list[tuple[str, Callable]]:
    layers = list(m.layers)
    stages = []
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1

        def stage(h, layer=layer, first=i == 0, last=last):
            if first:
                h = h.reshape(h.shape[0], -1)
            h = layer(h)
            return h if last else m.act(h)

        stages.append((f"hidden{i + 1}" if not last else "out", stage))
    return stages


def _lenet_stages(m) -> list[tuple[str, Callable]]:
    return [
        ("conv1", lambda h: pool2d(m.act(m.conv1(h.reshape(h.shape[0], *m.input_hwc))), m.pool)),
        ("conv2", lambda h: pool2d(m.act(m.conv2(h)), m.pool)),
        ("fc1", lambda h: m.act(m.fc1(h.reshape(h.shape[0], -1)))),
        ("fc2", lambda h: m.act(m.fc2(h))),
        ("out", lambda h: m.out(h)),
    ]


def _stages(m) -> list[tuple[str, Callable]]:
    if isinstance(m, MLP):
        return _mlp_stages(m)
    if isinstance(m, LeNet):
        return _lenet_stages(m)
    raise TypeError(
        f"layer_splits supports the MLP and LeNet models, got {type(m).__name__}; "
        "pass splits={name: (features_fn, head_fn)} for other models"
    )


class _Cut:
    """``apply(state, x)``: the stages ``[lo, hi)`` of the merged model (hashable: the graph
    definition and the cut)."""

    __slots__ = ("__weakref__", "graphdef", "hi", "key", "lo")

    def __init__(self, graphdef, lo: int, hi: int | None):
        self.graphdef, self.lo, self.hi = graphdef, lo, hi
        self.key = (_Key(graphdef), lo, hi)

    def __call__(self, state, x):
        for _, f in _stages(nnx.merge(self.graphdef, state))[self.lo : self.hi]:
            x = f(x)
        return x

    def __eq__(self, other):
        return type(other) is _Cut and self.key == other.key

    def __hash__(self):
        return hash(("cut", self.key))

    def __repr__(self):
        return f"stages [{self.lo}:{self.hi}]"


def layer_splits(model) -> dict[str, tuple[Classifier, Classifier]]:
    """``{name: (features, head)}`` for the hidden layers of a geomrobust NNX model.

    ``MLP``: ``"hidden1"``, ``"hidden2"``, ... (after each nonlinearity). ``LeNet``:
    ``"conv1"``, ``"conv2"`` (after nonlinearity and pooling), ``"fc1"``, ``"fc2"``. Both
    halves are classifiers (pytrees) holding the model's weights at the time of the call,
    in evaluation mode; the model is not modified. Other models (``ResNet``) raise
    ``TypeError``.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a geomrobust NNX model, got {type(model).__name__}")
    graphdef, state = nnx.split(model)
    m = nnx.merge(graphdef, state)
    m.eval()
    names = [name for name, _ in _stages(m)]
    graphdef, state = nnx.split(m)
    return {
        names[s]: (Classifier(_Cut(graphdef, 0, s + 1), state),
                   Classifier(_Cut(graphdef, s + 1, None), state))
        for s in range(len(names) - 1)
    }  # fmt: skip
