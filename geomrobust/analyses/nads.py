"""Neural anisotropy directions of an architecture, and its Fourier accuracy map.

``compute(architecture, None, settings)`` is ``geomrobust nads`` (README.md, "Command
line"; Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Neural anisotropy directions",
NeurIPS 2020): the eigenvectors of ``E_θ[∇f_θ(x_0) ∇f_θ(x_0)ᵀ]`` over random initialisations
``θ`` at a fixed ``x_0 ~ N(0, I)``, with the two-class logit difference ``f_1 - f_0`` as the
output, and optionally the test accuracy of the architecture trained on the directional
datasets ``D(v)`` of 2-D Fourier directions ``v`` (the accuracy map). NADs depend on the
architecture, not on trained weights. The accuracy map runs over chunks of frequencies,
resumable with a store (each frequency draws its data from ``fold_in(key, i W + j)``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import numpy as np

from geomrobust.engine import track
from geomrobust.measures import fourier_accuracy_map, fourier_magnitude, nads
from geomrobust.models import as_classifier, create_model, pure_apply

from ._common import AnalysisResult, chunked, resolve_key

__all__ = ["Architecture", "NADSettings", "compute"]


class Architecture(NamedTuple):
    """A model of :func:`geomrobust.create_model` without weights: ``name``, ``config``
    (keyword arguments) and ``input_shape`` ``(H, W, C)``."""

    name: str
    config: Mapping
    input_shape: tuple[int, ...]

    @classmethod
    def from_metadata(cls, metadata: Mapping, config: Mapping | None = None):
        """The architecture of a checkpoint (its ``model_config``), ``config`` overriding."""
        mc = dict(metadata["model_config"])
        name = mc.pop("name")
        shape = tuple(int(s) for s in mc.pop("input_shape"))
        mc.pop("num_classes", None)
        return cls(name, {**mc, **(config or {})}, shape)

    def create(self, key):
        """A two-class network of this architecture initialised from ``key``."""
        return create_model(self.name, self.input_shape, 2, key=key, **self.config)


@dataclasses.dataclass(frozen=True)
class NADSettings:
    """The options that change the numbers (defaults: those of ``geomrobust nads``).

    num_networks : initialisations averaged; batch : networks per jitted batch; num : NADs
    kept; accuracy_map : also train on the Fourier directions; map_stride : every S-th
    frequency along each axis; map_train, map_test : examples per direction; map_steps,
    map_lr : steps and (peak) learning rate per direction; map_batch : minibatch size;
    map_optimizer, map_schedule : ``"adam"``/``"sgd"`` and ``"constant"``/``"linear"``/
    ``"onecycle"``; map_clip : global gradient-norm clip (None: none); map_sampling :
    ``"random"`` batches or ``"epoch"`` permutations (all of
    :func:`geomrobust.measures.fourier_accuracy_map`; the authors' recipe is plain SGD at 0.5
    decaying linearly to 0, clip 0.5, epoch shuffling: ``scripts/fourier_map.py --recipe
    authors``); map_chunk : directions trained at once (and per resumable chunk); key : PRNG
    seed.
    """

    num_networks: int = 256
    batch: int = 32
    num: int = 16
    accuracy_map: bool = False
    map_stride: int = 1
    map_train: int = 1000
    map_test: int = 500
    map_steps: int = 300
    map_lr: float = 1e-2
    map_batch: int = 64
    map_optimizer: str = "adam"
    map_schedule: str = "constant"
    map_clip: float | None = None
    map_sampling: str = "random"
    map_chunk: int = 16
    key: int = 0


def compute(
    architecture: Architecture,
    data=None,
    settings: NADSettings = NADSettings(),
    *,
    store=None,
    key=None,
    progress=None,
) -> AnalysisResult:
    """NADs (and the accuracy map) of ``architecture``.

    Parameters
    ----------
    architecture : :class:`Architecture` (the weights play no part).
    data : unused (NADs are measured at a random ``x_0``); None.
    settings : :class:`NADSettings`.
    store : optional :class:`geomrobust.io.ChunkStore` for the accuracy map, cut with
        ``settings.map_chunk``.
    progress : None, True or a callable (NADs count as one unit, then one per frequency).
    key : a PRNG key replacing ``jax.random.key(settings.key)`` (not with a store).

    Returns
    -------
    (arrays, summary)
        ``eigenvalues``, ``eigenvectors``, ``fourier_magnitude``, ``x0`` and, with the map,
        ``map_accuracy``, ``map_grid``, ``map_frequencies``; the summary holds the
        architecture, the eigenvalues and the map's mean and minimum accuracy.
    """
    if data is not None:
        raise ValueError("NADs are measured at a random input x0: pass data=None")
    s = settings
    arch = architecture
    shape = tuple(arch.input_shape)
    k = resolve_key(s, key, store)
    num = min(s.num, math.prod(shape), s.num_networks)
    with track(progress, 1, "nads") as report:
        res = nads(
            lambda kk: as_classifier(arch.create(kk)),
            shape,
            num_networks=s.num_networks,
            key=k,
            chunk_size=s.batch,
            num=num,
            output="difference",
        )
        if report is not None:
            report(1)
    vecs = np.asarray(res.eigenvectors)
    ev = np.asarray(res.eigenvalues)
    arrays = {
        "eigenvalues": ev,
        "eigenvectors": vecs,
        "fourier_magnitude": np.asarray(fourier_magnitude(vecs)),
        "x0": np.asarray(res.x0),
    }
    summary = {
        "architecture": arch.name,
        "model_config": dict(arch.config),
        "input_shape": list(shape),
        "num_networks": s.num_networks,
        "eigenvalues": ev.tolist(),
        "eigenvalue_ratio_first_last": float(ev[0] / ev[-1]) if ev[-1] > 0 else None,
    }
    if s.accuracy_map:
        amap = _accuracy_map(arch, s, jax.random.fold_in(k, 1), store, progress)
        arrays.update(amap)
        summary.update(
            map_mean_accuracy=float(np.mean(amap["map_accuracy"])),
            map_min_accuracy=float(np.min(amap["map_accuracy"])),
            map_directions=int(amap["map_accuracy"].size),
        )
    return AnalysisResult(arrays, summary)


def _accuracy_map(arch: Architecture, s: NADSettings, key, store, progress) -> dict:
    """Accuracy of the architecture trained on ``D(v)`` per Fourier direction, by chunks."""
    h, w = arch.input_shape[:2]
    apply, _ = pure_apply(arch.create(key))

    def init_params(kk):
        return pure_apply(arch.create(kk))[1]

    freqs = np.asarray(
        [(i, j) for i in range(0, h, s.map_stride) for j in range(0, w, s.map_stride)], np.int32
    )

    def chunk(fc, *, chunk):
        amap = fourier_accuracy_map(
            init_params,
            apply,
            arch.input_shape,
            key=key,
            frequencies=[tuple(int(v) for v in f) for f in np.asarray(fc)],
            n_train=s.map_train,
            n_test=s.map_test,
            steps=s.map_steps,
            learning_rate=s.map_lr,
            batch_size=s.map_batch,
            optimizer=s.map_optimizer,
            schedule=s.map_schedule,
            clip_norm=s.map_clip,
            sampling=s.map_sampling,
            chunk_size=chunk.size,
        )
        return {"accuracy": amap.accuracy}

    acc = chunked(
        chunk,
        (freqs,),
        (),
        chunk_size=s.map_chunk,
        desc="accuracy map",
        store=store,
        progress=progress,
    )["accuracy"]
    grid = np.full((h, w), np.nan, acc.dtype)
    grid[freqs[:, 0] % h, freqs[:, 1] % w] = acc
    return {"map_accuracy": acc, "map_grid": grid, "map_frequencies": freqs}
