"""Margins of a classifier on a dataset: DeepFool, DCT bands, random subspaces, PGD, SparseFool.

``compute(classifier, data, settings)`` runs one of the searches of ``geomrobust margins``
(README.md, "Command line"): one driver call over the whole dataset, which cuts it into
fixed-size chunks and, with a chunk store, resumes where it stopped:

* ``method="deepfool"``: minimal Lp perturbations (Moosavi-Dezfooli, Fawzi, Frossard,
  "DeepFool", CVPR 2016) with ``ρ = mean ||r|| / ||x||``;
* ``subspaces="dct"``: L2 DeepFool inside diagonal blocks of 2-D DCT frequencies
  (Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Hold me tight!", NeurIPS 2020);
* ``subspaces="random"``: margins inside random m-dimensional subspaces over the minimal
  margin, against ``sqrt(D/m)`` (Fawzi, Moosavi-Dezfooli, Frossard, NeurIPS 2016);
* ``method="pgd"``: robust accuracy under PGD at several radii (Madry et al., ICLR 2018);
  chunk ``c`` draws its random starts from ``fold_in(key, first example of c)``, as
  :func:`geomrobust.robust_accuracy` does;
* ``method="sparsefool"``: sparse perturbations (Modas, Moosavi-Dezfooli, Frossard, CVPR 2019);
* ``method="best"``: the smallest perturbation over DeepFool, FMN and (L2) C&W
  (:func:`geomrobust.search.minimal_margin`), which search found it, and DeepFool's
  overestimate ratio ``||r_DeepFool|| / ||r_min||``.

Statistics exclude, and count, examples whose search did not converge and (when labels are
given) examples the model misclassifies. The searches' per-example ``status`` codes
(:class:`geomrobust.Status`, docs/api.md section 2) are saved with the other arrays, and the
summary counts them by name (``status``). A run folder written before status codes existed
resumes: its chunks get ``status`` (and ``minimal_status``) from their success fields,
``SUCCESS`` or ``UNKNOWN`` (``_with_status``).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from geomrobust._deprecation import renamed
from geomrobust._status import Status, status_from_success
from geomrobust.measures import (
    dct_subspaces,
    normalized_robustness,
    random_subspace_margins,
    subspace_margins,
    summarize_bands,
)
from geomrobust.models import as_classifier
from geomrobust.search import deepfool_dataset, minimal_margin, pgd, sparsefool
from geomrobust.search._minimal import ratio_summary

from ._common import (
    AnalysisResult,
    chunked,
    compute_doc,
    inputs,
    predict,
    resolve_bounds,
    resolve_key,
    summarize,
)

__all__ = ["MarginSettings", "compute", "dct_layout", "default_epsilons"]

METHODS = ("deepfool", "pgd", "sparsefool", "best")
SUBSPACES = ("none", "dct", "random")


@renamed(max_iter="deepfool_steps")  # old field names (docs/api.md)
@dataclasses.dataclass(frozen=True)
class MarginSettings:
    """The options that change the numbers (defaults: those of ``geomrobust margins``).

    method : ``deepfool``, ``pgd``, ``sparsefool`` or ``best``; norm : ``"2"`` or ``"inf"``
    (DeepFool, PGD, best); searches : the searches of ``best`` (C&W is L2 only);
    fmn_steps, cw_steps, cw_binary_steps : their step counts;
    subspaces : ``none``, ``dct`` or ``random`` (DeepFool L2 only);
    overshoot, deepfool_steps, slots : DeepFool's (and SparseFool's overshoot); eps : PGD radii
    (None: :func:`default_epsilons`); steps : PGD steps; bounds : the box of every search,
    ``"auto"`` (default: ``(0, 1)`` when the inputs are images in ``[0, 1]``, else none),
    ``(lo, hi)`` or None; lambda_ : SparseFool's λ; block, stride : DCT blocks (None:
    :func:`dct_layout`);
    subspace_dim : random-subspace dimension (None: ``D // 16``); draws : random subspaces;
    chunk_size : examples per chunk (and per resumable chunk file); key : PRNG seed.
    """

    method: str = "deepfool"
    norm: str = "2"
    subspaces: str = "none"
    overshoot: float = 0.02
    deepfool_steps: int = 50
    slots: int = 32
    eps: tuple[float, ...] | None = None
    steps: int = 10
    bounds: tuple[float, float] | str | None = "auto"
    lambda_: float = 3.0
    block: int | None = None
    stride: int | None = None
    subspace_dim: int | None = None
    draws: int = 3
    chunk_size: int = 128
    key: int = 0
    searches: tuple[str, ...] = ("deepfool", "fmn", "cw")
    fmn_steps: int = 100
    cw_steps: int = 100
    cw_binary_steps: int = 5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.norm not in ("2", "inf"):
            raise ValueError(f"norm must be '2' or 'inf', got {self.norm!r}")
        if self.subspaces not in SUBSPACES:
            raise ValueError(f"subspaces must be one of {SUBSPACES}, got {self.subspaces!r}")
        if self.subspaces != "none" and (self.method != "deepfool" or self.norm != "2"):
            raise ValueError(
                "--subspaces needs --method deepfool --norm 2 (subspace margins are L2)"
            )

    @property
    def p(self) -> float:
        return math.inf if self.norm == "inf" else 2.0


def default_epsilons(norm: str) -> list[float]:
    """PGD radii when none are given: ``1, 2, 4, 8 / 255`` in Linf, ``0.1 ... 1`` in L2."""
    if norm == "inf":
        return [1 / 255, 2 / 255, 4 / 255, 8 / 255]
    return [0.1, 0.25, 0.5, 1.0]


def dct_layout(input_shape, block: int | None, stride: int | None) -> tuple[int, int]:
    """DCT block side and stride: ``min(8, H // 4)`` and 1 up to 28 pixels, else 2."""
    h = int(input_shape[0])
    return block or min(8, max(1, h // 4)), stride or (1 if h <= 28 else 2)


@compute_doc
def compute(
    classifier,
    data,
    settings: MarginSettings = MarginSettings(),
    *,
    store=None,
    key=None,
    devices=None,
    progress=None,
) -> AnalysisResult:
    """Run the margin search of ``settings`` over ``data``.

    Parameters
    ----------
    classifier : anything :func:`geomrobust.as_classifier` accepts.
    data : an ``ArrayDataset``, ``(x, y)`` or ``x``; without labels the searches start from
        the predicted labels (every example then counts as correctly classified).
    settings : :class:`MarginSettings`.
    {shared parameters}

    Returns
    -------
    (arrays, summary)
        ``arrays``: ``labels`` and the method's per-example arrays; ``summary``: JSON-ready,
        with ``n``, ``clean_accuracy`` (labels given) and the method's statistics and counts.
    """
    clf = as_classifier(classifier)
    x, y = inputs(data, host=True)  # a NumPy dataset is not copied to a JAX array
    n = int(x.shape[0])
    box = resolve_bounds(settings.bounds, x)
    settings = dataclasses.replace(settings, bounds=box)
    pred = predict(clf, x, chunk_size=min(512, n), devices=devices)
    clean = np.ones(n, bool) if y is None else pred == np.asarray(y)
    if store is not None:  # chunks of a run folder written before status codes get them
        store = store.upgraded(_with_status)
    run = dict(store=store, progress=progress, devices=devices)
    k = resolve_key(settings, key, store)
    if settings.subspaces == "dct":
        arrays, summary = _dct(clf, x, y, clean, settings, run)
    elif settings.subspaces == "random":
        arrays, summary = _random(clf, x, y, settings, run, k)
    else:
        method = {"deepfool": _deepfool, "pgd": _pgd, "sparsefool": _sparsefool, "best": _best}
        arrays, summary = method[settings.method](clf, x, y, pred, clean, settings, run, k)
    labels = pred if y is None else np.asarray(y)
    head = {
        "method": settings.method,
        "norm": settings.norm,
        "subspaces": settings.subspaces,
        "n": n,
        "box": None if box is None else list(box),
    }
    if y is not None:
        head["clean_accuracy"] = float(clean.mean())
    return AnalysisResult({"labels": labels, **arrays}, {**head, **summary})


#: the status array of a chunk and the success fields it is derived from when missing
_STATUS_OF = {"status": ("converged", "success"), "minimal_status": ("minimal_converged",)}


def _with_status(arrays: dict) -> dict:
    """A chunk read back from a run folder, with the status arrays of a chunk written before
    status codes existed (docs/api.md section 2): ``status`` (``minimal_status``) from its
    success field ``converged`` or ``success`` (``minimal_converged``), ``SUCCESS`` where it
    succeeded and ``UNKNOWN`` elsewhere (why a search failed was not saved). A chunk that
    has them is returned as it is."""
    out = dict(arrays)
    for name, sources in _STATUS_OF.items():
        src = next((s for s in sources if s in out), None)
        if name not in out and src is not None:
            out[name] = status_from_success(out[src])
    return out


def _deepfool_kw(s: MarginSettings) -> dict:
    return {
        "overshoot": s.overshoot,
        "steps": s.deepfool_steps,
        "slots": s.slots,
        "bounds": s.bounds,
    }


def _deepfool(clf, x, y, pred, clean, s, run, key):
    res = deepfool_dataset(clf, x, y, norm=s.p, chunk_size=s.chunk_size, **_deepfool_kw(s), **run)
    r = {f: np.asarray(v) for f, v in res._asdict().items()}
    ok = r["converged"] & clean
    summary = {
        "margin": summarize(r["margin"], ok),
        "n_unconverged": int((~r["converged"]).sum()),
        "converged_fraction": float(r["converged"].mean()),
        "rho": normalized_robustness(r["margin"], x, ok, norm=s.p),
        "status": Status.describe(r["status"]),
    }
    keys = ("margin", "converged", "adv_label", "iterations", "perturbation", "status")
    return {f: r[f] for f in keys}, summary


def _best(clf, x, y, pred, clean, s, run, key):
    kw = _deepfool_kw(s)
    df_kw = {k: kw[k] for k in ("overshoot", "steps")}
    cw_kw = dict(steps=s.cw_steps, binary_steps=s.cw_binary_steps)

    res = minimal_margin(
        clf, x, y, norm=s.p, searches=s.searches, bounds=s.bounds, deepfool_kw=df_kw,
        fmn_kw=dict(steps=s.fmn_steps), cw_kw=cw_kw, chunk_size=s.chunk_size, **run,
    )  # fmt: skip
    fields = ("margin", "converged", "adv_label", "found_by", "status", "margins",
              "deepfool_ratio", "perturbation")  # fmt: skip
    r = {f: np.asarray(getattr(res, f)) for f in fields}  # margins (S, N)
    searches = res.searches
    ok = r["converged"] & clean
    ratio = np.where(ok & (r["margin"] > 0), r["deepfool_ratio"], np.inf)
    summary = {
        "searches": list(searches),
        "margin": summarize(r["margin"], ok),
        "n_unconverged": int((~r["converged"]).sum()),
        "converged_fraction": float(r["converged"].mean()),
        "rho": normalized_robustness(r["margin"], x, ok, norm=s.p),
        "deepfool_ratio": ratio_summary(ratio),
        "status": Status.describe(r["status"]),
        "found_by": {
            n: float(np.mean(r["found_by"][ok] == i)) if ok.any() else 0.0
            for i, n in enumerate(searches)
        },
    }
    return r, summary


def _dct(clf, x, y, clean, s, run):
    block, stride = dct_layout(x.shape[1:], s.block, s.stride)
    bases = dct_subspaces(x.shape[1:], block, stride, dtype=x.dtype)

    res = subspace_margins(clf, x, y, bases, chunk_size=s.chunk_size, **_deepfool_kw(s), **run)
    r = {f: np.asarray(getattr(res, f)) for f in ("margin", "converged", "iterations", "status")}
    bands = summarize_bands(r["margin"], r["converged"] & clean[None])
    summary = {
        "block": block, "stride": stride, "n_bands": len(bases), "bands": bands._asdict(),
        "status": Status.describe(r["status"]),  # over every band and example
    }  # fmt: skip
    if s.bounds is not None:  # a band whose search leaves the box has no boundary inside it:
        # its margin is a lower bound (larger than any feasible perturbation), not a number
        summary["n_no_boundary_in_box"] = (~r["converged"] & clean[None]).sum(axis=1).tolist()
    return r, summary


def _random(clf, x, y, s, run, key):
    d = math.prod(x.shape[1:])
    m = s.subspace_dim or max(1, d // 16)

    res = random_subspace_margins(
        clf, x, y, dim=m, key=key, num_draws=s.draws, chunk_size=s.chunk_size,
        **_deepfool_kw(s), **run,
    )  # fmt: skip
    fields = ("margin", "converged", "minimal_margin", "minimal_converged", "ratio", "status",
              "minimal_status")  # fmt: skip
    r = {f: np.asarray(getattr(res, f)) for f in fields}  # the draws (draws, N)
    ratio = r["ratio"]
    finite = ratio[np.isfinite(ratio)]
    summary = {
        "dim": m,
        "median_ratio": float(np.median(finite)) if finite.size else float("nan"),
        "predicted_ratio": math.sqrt(d / m),
        "ratio_n_valid": int(finite.size),
        "ratio_n_excluded": int(ratio.size - finite.size),
        "status": Status.describe(r["status"]),
        "minimal_status": Status.describe(r["minimal_status"]),
    }
    return r, summary


@partial(jax.jit, static_argnames=("norm", "steps", "bounds"))
def _pgd_success(clf, key, eps, x, y, *, norm, steps, bounds):
    """PGD success and status ``(C, E)`` of a chunk at every radius (one compilation per
    architecture, shapes and attack settings)."""

    def one(e):
        r = pgd(clf, x, y, key=key, eps=e, norm=norm, steps=steps, bounds=bounds)
        return r.success, r.status

    success, status = jax.lax.map(one, eps)
    return success.T, status.T


def _pgd(clf, x, y, pred, clean, s, run, key):
    eps = list(s.eps) if s.eps else default_epsilons(s.norm)
    eps_arr = jnp.asarray(eps, x.dtype)
    labels = jnp.asarray(pred) if y is None else y
    bounds = s.bounds

    def chunk(clf, eps_arr, xc, yc, *, chunk):  # the chunk's own random starts
        k = jax.random.fold_in(key, chunk.start)
        success, status = _pgd_success(clf, k, eps_arr, xc, yc, norm=s.p, steps=s.steps,
                                       bounds=bounds)  # fmt: skip
        return {"success": success, "status": status}

    r = chunked(chunk, (x, labels), (clf, eps_arr), chunk_size=s.chunk_size, desc="pgd", **run)
    success, status = r["success"].T, r["status"].T  # (E, N)
    accuracy = (clean[None, :] & ~success).mean(axis=1)
    epsilons = np.asarray(eps, np.float64)
    summary = {
        "robust_accuracy": dict(zip(map(str, epsilons), map(float, accuracy), strict=True)),
        "status": {str(e): Status.describe(c) for e, c in zip(epsilons, status, strict=True)},
    }
    arrays = {"epsilons": epsilons, "accuracy": accuracy, "success": success, "status": status}
    return arrays, summary


@partial(jax.jit, static_argnames=("lambda_", "overshoot", "bounds"))
def _sparsefool_program(clf, x, y, *, lambda_, overshoot, bounds):
    return sparsefool(clf, x, y, lambda_=lambda_, overshoot=overshoot, bounds=bounds)._asdict()


def _sparsefool(clf, x, y, pred, clean, s, run, key):
    labels = jnp.asarray(pred) if y is None else y

    def chunk(clf, xc, yc, *, chunk):
        return _sparsefool_program(
            clf, xc, yc, lambda_=float(s.lambda_), overshoot=float(s.overshoot), bounds=s.bounds
        )

    r = chunked(chunk, (x, labels), (clf,), chunk_size=s.chunk_size, desc="sparsefool", **run)
    ok = r["converged"] & clean
    summary = {
        "l1": summarize(r["l1"], ok),
        "sparsity": summarize(r["sparsity"], ok),
        "n_unconverged": int((~r["converged"]).sum()),
        "converged_fraction": float(r["converged"].mean()),
        "status": Status.describe(r["status"]),
    }
    keys = ("l1", "sparsity", "converged", "adv_label", "perturbation", "status")
    return {f: r[f] for f in keys}, summary
