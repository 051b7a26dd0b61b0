"""The API contract of docs/api.md, checked on every exported callable.

Every public name of ``geomrobust`` and of its public subpackages is inspected:

* names (docs/api.md section 1): no old iteration-budget or radius keyword (``max_iter``,
  ``queries``, ``epsilons``, ...), a keyword-only ``key``, ``chunk_size`` defaulting to
  :data:`geomrobust.engine.CHUNK_SIZE`, ``(chunk_size, devices, progress)`` the last
  keyword-only parameters in that order, ``bounds`` defaulting to ``None``;
* results (section 2): one return type (no union, no tuple), every NamedTuple result
  exported next to its function;
* nothing private and no foreign object (``importlib``'s ``PackageNotFoundError``) exported.

A renamed keyword kept for one release (``geomrobust._deprecation.renamed``) is fine: the
signature inspected is the new one.

``ALLOWED`` lists the violations that other pieces of issue 23 still have to remove, each with
its owner. It only shrinks: an entry that no longer fails is itself a failure, so remove it
when the function complies.
"""

from __future__ import annotations

import inspect
import re
import types

import pytest

import geomrobust as gr

NAMESPACES = (
    "search",
    "measures",
    "ops",
    "data",
    "train",
    "engine",
    "models",
    "io",
    "analyses",
    "parallel",
)
"""Public subpackages whose exports are checked, in the order that names an object (an
object exported in several places is reported under the first, the top level last)."""

ANALYSES = ("curvature", "diagnose", "margins", "nads", "slices")
"""The analysis modules (``geomrobust.analyses.<name>.compute`` and their settings)."""

OLD_NAMES = {
    "max_iter": "steps",
    "queries": "steps",
    "max_passes": "steps",
    "num_steps": "steps",
    "max_restarts": "restarts",
    "deepfool_iter": "deepfool_steps",
    "max_bisect": "bisect_steps",
    "epsilons": "eps",
    "epsilon": "eps",
    "xi": "eps",
    "radius": "eps",
}
"""Old parameter names (docs/api.md section 1) and their replacements."""

OLD_FIELDS = {"epsilons": "eps", "max_iter": "steps", "queries": "steps"}
"""Old names as settings or result fields."""

LAST = ("chunk_size", "devices", "progress")

EXEMPT: dict[tuple[str, str], str] = {
    ("measures.fourier_accuracy_map", "chunk_size"): (
        "a chunk is directions, each a whole training run holding its own n_train + n_test "
        "examples: 256 at once would take gigabytes (default 16)"
    ),
    ("train.cross_entropy_loss", "key"): (
        "the LossFn protocol loss_fn(apply, params, x, y, key) -> (loss, aux) that "
        "make_train_step calls positionally, as every robust-training builder's loss"
    ),
    ("train.cross_entropy_loss", "return"): (
        "the (loss, aux) pair of jax.value_and_grad(has_aux=True), the LossFn protocol"
    ),
}
"""Deliberate, documented departures from a rule (not shrinking)."""

# Violations still to be removed by the other parts of issue 23: {(name, rule): owner}.
# Shrink only (an entry that passes fails test_allowlist_shrinks).
ALLOWED: dict[tuple[str, str], str] = {}


def _exports():
    """(qualified name, object, namespace module) of every exported object, each object once
    (under its first namespace)."""
    seen: dict[int, str] = {}
    out = []
    modules = [(f"geomrobust.{n}", getattr(gr, n)) for n in NAMESPACES]
    modules += [(f"geomrobust.analyses.{n}", getattr(gr.analyses, n)) for n in ANALYSES]
    modules.append(("geomrobust", gr))
    for modname, module in modules:
        names = getattr(module, "__all__", None) or [
            n for n in vars(module) if not n.startswith("_")
        ]
        for name in sorted(names):
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                continue
            if modname.startswith("geomrobust.analyses.") and not (
                name == "compute" or name.endswith("Settings")
            ):
                continue
            qual = f"{modname.removeprefix('geomrobust').lstrip('.') or 'gr'}.{name}"
            if id(obj) in seen:
                continue
            seen[id(obj)] = qual
            out.append((qual, obj, module))
    return out


EXPORTS = _exports()

HOMES: dict[int, list[types.ModuleType]] = {}
"""id(object) -> every checked namespace that exports it."""
for _mod in [gr, *(getattr(gr, n) for n in NAMESPACES)]:
    for _name, _obj in vars(_mod).items():
        if not _name.startswith("_") and not isinstance(_obj, types.ModuleType):
            HOMES.setdefault(id(_obj), []).append(_mod)


def _is_namedtuple(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def _params(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return sig


def _return_annotation(fn):
    """The return annotation as a string (unevaluated under ``from __future__ import
    annotations``) and the object it names, if it is one name in the function's module."""
    fn = inspect.unwrap(fn)
    ann = getattr(fn, "__annotations__", {}).get("return", inspect.Parameter.empty)
    if ann is inspect.Parameter.empty:
        return None, None
    text = ann if isinstance(ann, str) else inspect.formatannotation(ann)
    target = None
    if isinstance(ann, str):
        if re.fullmatch(r"[A-Za-z_][A-Za-z_0-9.]*", ann):
            scope = getattr(fn, "__globals__", {})
            head, *rest = ann.split(".")
            target = scope.get(head)
            for part in rest:
                target = getattr(target, part, None)
    else:
        target = ann
    return text, target


def _top_level_split(text: str, sep: str) -> list[str]:
    """``text`` split at each ``sep`` outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def _violations(exports=None):
    found: dict[tuple[str, str], str] = {}
    for qual, obj, module in EXPORTS if exports is None else exports:
        # nothing private, nothing foreign
        if isinstance(obj, type) or callable(obj):
            objmod = getattr(obj, "__module__", "") or ""
            if not objmod.startswith("geomrobust"):
                found[(qual, "foreign")] = f"re-exports {objmod}.{obj.__name__}"
            if getattr(obj, "__name__", "x").startswith("_"):
                found[(qual, "private")] = f"exports the private {obj.__name__}"
        elif type(obj).__module__ not in ("builtins",) and not type(obj).__module__.startswith(
            "geomrobust"
        ):
            found[(qual, "foreign")] = f"re-exports a {type(obj).__module__} object"

        if _is_namedtuple(obj):
            for f in obj._fields:
                if f in OLD_FIELDS:
                    found[(qual, f"field:{f}")] = f"field {f} (use {OLD_FIELDS[f]})"
            continue
        if isinstance(obj, type):
            if not qual.endswith("Settings"):
                continue
            fields = getattr(obj, "__dataclass_fields__", {})
            for f in fields:
                if f in OLD_FIELDS or f in OLD_NAMES:
                    new = OLD_FIELDS.get(f) or OLD_NAMES[f]
                    found[(qual, f"field:{f}")] = f"settings field {f} (use {new})"
            continue
        if not callable(obj):
            continue
        sig = _params(obj)
        if sig is None:
            continue
        params = sig.parameters
        for name, p in params.items():
            if name in OLD_NAMES:
                found[(qual, f"name:{name}")] = f"parameter {name} (use {OLD_NAMES[name]})"
            if name == "batch" and isinstance(p.default, int) and not isinstance(p.default, bool):
                found[(qual, "name:batch")] = "parameter batch (a chunk size: use chunk_size)"
        if "key" in params and params["key"].kind is not inspect.Parameter.KEYWORD_ONLY:
            found[(qual, "key")] = "key is not keyword-only"
        if "chunk_size" in params:
            d = params["chunk_size"].default
            if d is not inspect.Parameter.empty and d != gr.engine.CHUNK_SIZE:
                found[(qual, "chunk_size")] = (
                    f"chunk_size defaults to {d}, not engine.CHUNK_SIZE ({gr.engine.CHUNK_SIZE})"
                )
        present = [
            n for n in LAST if n in params and params[n].kind is inspect.Parameter.KEYWORD_ONLY
        ]
        if present:
            kwonly = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
            if kwonly[-len(present) :] != present:
                found[(qual, "last")] = (
                    f"{', '.join(present)} must be the last keyword-only parameters in that "
                    f"order; the keyword-only parameters are {kwonly}"
                )
        if "bounds" in params:
            d = params["bounds"].default
            if d is not inspect.Parameter.empty and d is not None:
                found[(qual, "bounds")] = f"bounds defaults to {d}, not None"

        if isinstance(obj, type):
            continue
        text, target = _return_annotation(obj)
        if text is not None:
            members = [m for m in _top_level_split(text.replace(" ", ""), "|") if m != "None"]
            if len(members) > 1 or re.match(r"(typing\.)?Union\[", text):
                found[(qual, "return")] = f"returns a union ({text}): one return type"
            elif (
                re.match(r"(tuple|Tuple|typing\.Tuple)\[", members[0])
                and not members[0].endswith(",...]")
                and not obj.__name__.endswith("_step")
            ):
                found[(qual, "return")] = f"returns a plain tuple ({text}): use a NamedTuple"
        if _is_namedtuple(target) and target.__module__.startswith("geomrobust"):
            for where in HOMES.get(id(obj), [module]):
                if not any(v is target for k, v in vars(where).items() if k[0] != "_"):
                    found[(qual, f"result:{where.__name__}")] = (
                        f"result {target.__name__} is not exported next to {obj.__name__} "
                        f"in {where.__name__}"
                    )
    return found


VIOLATIONS = _violations()


@pytest.mark.parametrize(
    "qual, rule",
    sorted(VIOLATIONS),
    ids=[f"{q}:{r}" for q, r in sorted(VIOLATIONS)],
)
def test_contract(qual, rule):
    """Every violation of docs/api.md found in the exported API is on the allowlist."""
    if (qual, rule) in EXEMPT:
        pytest.skip(f"exempt: {EXEMPT[(qual, rule)]}")
    if (qual, rule) in ALLOWED:
        pytest.skip(f"allowed until {ALLOWED[(qual, rule)]}")
    pytest.fail(f"{qual}: {VIOLATIONS[(qual, rule)]} (docs/api.md)")


def test_allowlist_shrinks():
    """An allowlisted violation that is gone must leave the allowlist."""
    stale = sorted(k for k in {**ALLOWED, **EXEMPT} if k not in VIOLATIONS)
    assert not stale, f"these now comply: remove them from ALLOWED: {stale}"


def test_the_checks_catch_violations():
    """The inspection itself finds each kind of violation (on throwaway functions)."""
    import collections

    Result = collections.namedtuple("Result", "a")

    def bad(x, key, *, max_iter=3, chunk_size=64, progress=None, devices=None, bounds=(0, 1)):
        return x

    def ok(
        x,
        *,
        steps=3,
        key=None,
        bounds=None,
        chunk_size=gr.engine.CHUNK_SIZE,
        devices=None,
        progress=None,
    ) -> int:
        return x

    def union(x) -> int | tuple[int, int]:
        return x

    def result(x) -> Result:
        return Result(x)

    mod = types.ModuleType("geomrobust._contract_probe")
    for f in (bad, ok, union, result):
        f.__module__ = mod.__name__
        setattr(mod, f.__name__, f)
    result.__globals__["Result"] = Result
    Result.__module__ = mod.__name__
    found = _violations([(f"probe.{f.__name__}", f, mod) for f in (bad, ok, union, result)])
    rules = {r for q, r in found if q == "probe.bad"}
    assert rules == {"name:max_iter", "key", "chunk_size", "last", "bounds"}, found
    assert not [k for k in found if k[0] == "probe.ok"], found
    assert ("probe.union", "return") in found
    assert ("probe.result", "result:geomrobust._contract_probe") in found
    mod.Result = Result
    assert ("probe.result", "result:geomrobust._contract_probe") not in _violations(
        [("probe.result", result, mod)]
    )


def test_renamed_keywords_are_marked():
    """A deprecated alias is a ``renamed`` wrapper that names its new keyword."""
    for qual, obj, _ in EXPORTS:
        renamed = getattr(obj, "__renamed__", None)
        if renamed is None:
            continue
        params = inspect.signature(obj).parameters
        for old, new in renamed.items():
            assert new in params, f"{qual}: renamed {old}= to {new}=, which it does not take"
            assert old not in params, f"{qual}: still takes the old keyword {old}="


STATUS_RESULTS = {
    # a search or solver that stops on a criterion: success field ``converged``
    "search.MarginResult": "converged",
    "search.MinimalMargin": "converged",
    "search.SparseFoolResult": "converged",
    "search.UniversalPerturbation": "converged",
    "search.BoundaryPoints": "converged",
    "search.DirectionalMargins": "converged",
    "measures.Curvatures": "converged",
    "measures.HessianEigs": "converged",
    "measures.NormalCurvatures": "converged",
    "measures.SubspaceMargins": "converged",
    "measures.RandomSubspaceMargins": "converged",  # and minimal_converged / minimal_status
    # an attack at a fixed radius: success field ``success``
    "search.AttackResult": "success",
    "measures.Synthesis": "success",
    # a per-example measurement that may be undefined in several ways: success field ``valid``
    "analyses.BoundarySet": "valid",
}
"""The results that docs/api.md section 2 says carry a per-example ``status`` (their values
are checked per entry point in tests/test_status.py)."""


@pytest.mark.parametrize("qual", sorted(STATUS_RESULTS))
def test_search_results_carry_status(qual):
    """One success field per result kind, and a ``status`` beside it (docs/api.md section 2)."""
    space, name = qual.split(".")
    cls = getattr(getattr(gr, space), name)
    fields = set(cls._fields)
    assert "status" in fields, f"{qual} has no status field"
    success = {"converged", "success", "valid"} & fields
    assert success == {STATUS_RESULTS[qual]}, f"{qual}: success fields {sorted(success)}"
