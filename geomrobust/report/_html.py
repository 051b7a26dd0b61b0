"""``index.html`` of the report: self-contained (inline CSS, figures beside it, no network)."""

from __future__ import annotations

import html
from pathlib import Path

from geomrobust.io import atomic_write

from ._stages import STAGES

__all__ = ["write_html"]

#: How the JSON record writes non-finite numbers (:func:`geomrobust.io.to_json_text`).
_NON_FINITE = ("nan", "inf", "-inf")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.92em;color:#333;max-width:900px}.note{background:#fff6d6;padding:.4em .7em}
code{background:#f4f4f4;padding:0 .2em}table.kv td{text-align:left}
nav ol{columns:2;max-width:900px}
"""

INTRO = {
    "accuracy": "Accuracy of each model on the analysed held-out examples, and under a PGD "
    "attack (L∞ ball, box [0, 1]).",
    "margins": "Distance from each example to the nearest decision boundary, found by DeepFool "
    "(Moosavi-Dezfooli et al., CVPR 2016) around the predicted label; ρ is the mean margin "
    "divided by the norm of the example.",
    "dct": "Margins inside subspaces of 2-D DCT frequencies (Ortiz-Jimenez et al., "
    '"Hold me tight!", NeurIPS 2020): which frequency bands the boundary is close in.',
    "random": "Margins in random subspaces compared with the minimal one (Fawzi et al., "
    "NeurIPS 2016): a curvature indicator.",
    "curvature": "Principal curvatures of the boundary between the example's class and its "
    "DeepFool class, at boundary points found by DeepFool and bisection, computed matrix-free "
    "(Lanczos on the projected Hessian; Fawzi et al., CVPR 2018). The fooling rates compare "
    "random perturbations of the median margin's size drawn inside the span of the shared "
    "curved directions with isotropic ones.",
    "loss_hessian": "Top eigenvalues of the Hessian of the loss with respect to the input "
    "(Moosavi-Dezfooli et al., CURE, CVPR 2019).",
    "slices": "2-D sections of the classifier through a boundary point and through its "
    "example (Fawzi et al., CVPR 2018): what the curvature numbers look like in a plane.",
    "nads": "Neural anisotropy directions of the architecture (Ortiz-Jimenez et al., NeurIPS "
    "2020): eigenvectors of E_θ[∇f_θ(x₀)∇f_θ(x₀)ᵀ] over random initialisations θ (two-class "
    "logit difference at a fixed Gaussian x₀). They depend on the architecture, not the weights.",
    "thickness": "Boundary thickness (Yang et al., NeurIPS 2020): along the segment from each "
    "example to its DeepFool point, the length over which the model hesitates between the two "
    "classes. Thicker boundaries go with robustness.",
    "minimal": "DeepFool's margin is an upper bound on the distance to the boundary. The "
    "smallest L2 perturbation over DeepFool and FMN (Pintor et al., NeurIPS 2021; C&W can be "
    "added through the sizes), with modest step counts, says how loose it is: the ratio "
    "||r_DeepFool|| / ||r_min|| per example (1.02 is the overshoot alone).",
    "frequency": 'Sensitivity to single Fourier basis perturbations (Yin et al., "A Fourier '
    'perspective on model robustness", NeurIPS 2019): the error when every example is '
    "perturbed by one 2-D Fourier basis image of a fixed L2 norm, per frequency (the heat "
    "map), and in which frequencies the DeepFool perturbations lie (their mean spectrum).",
    "noise": "Robustness to random rather than adversarial perturbations: the error under "
    "additive Gaussian noise of growing σ, compared with what a flat boundary at each "
    "example's DeepFool distance d would give, Φ(-d/σ) (Ford et al., ICML 2019), and the "
    "accuracy under common image corruptions at severities 1 to 5 (Hendrycks & Dietterich, "
    "ICLR 2019).",
    "interpretability": "Do the input gradients look like the image? The alignment between "
    "an example and the gradient of its logit (Etmann et al., ICML 2019), saliency maps "
    "(the gradient and SmoothGrad), and images synthesised from one seed towards every class "
    "by a large targeted attack (Santurkar et al., NeurIPS 2019).",
}


def _f(v, digits=4) -> str:
    if v is None or v in _NON_FINITE:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, _Pct):
        return f"{100 * v:.3g} %"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


class _Pct(float):
    """A fraction shown as a percentage by :func:`_f`."""


def _pct(v):
    """``v`` (a fraction in [0, 1], or None / a non-finite string) marked to print as a
    percentage: 0.8125 -> "81.2 %"."""
    if v is None or v in _NON_FINITE:
        return v
    return _Pct(v)


def _table(header, rows, *, kv: bool = False) -> str:
    cls = " class='kv'" if kv else ""
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{_f(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{cls}><tr>{h}</tr>{body}</table>"


def _section_table(name: str, s: dict, models) -> str:
    ms = [m for m in models if isinstance(s.get(m.name), dict)]
    if name == "accuracy":
        return _table(
            [
                "model",
                "method",
                "test accuracy (full split)",
                "clean accuracy (analysed)",
                f"PGD accuracy (L∞ ε = {ms[0] and s[ms[0].name]['pgd_eps_linf']})",
            ],
            [
                [
                    m.label,
                    s[m.name]["method"],
                    _pct(s[m.name]["test_accuracy_full_split"]),
                    _pct(s[m.name]["clean_accuracy"]),
                    _pct(s[m.name]["pgd_accuracy"]),
                ]
                for m in ms
            ],
        )
    if name == "margins":
        return _table(
            ["model", "norm", "median", "25%", "75%", "ρ", "converged", "unconverged"],
            [
                [
                    m.label,
                    tag,
                    s[m.name][tag].get("median"),
                    s[m.name][tag].get("q25"),
                    s[m.name][tag].get("q75"),
                    s[m.name][tag]["rho"],
                    s[m.name][tag]["n_valid"],
                    s[m.name][tag]["n_unconverged"],
                ]
                for m in ms
                for tag in ("l2", "linf")
            ],
        )
    if name == "dct":
        header = ["model"] + [f"band {j}" for j in range(s["n_bands"])]
        rows = [
            [m.label]
            + [
                f"{_f(v, 3)} ({u} unconv.)" if u else _f(v, 3)
                for v, u in zip(s[m.name]["median"], s[m.name]["n_unconverged"], strict=True)
            ]
            for m in ms
        ]
        return "<p>Median L2 margin per band (unconverged examples excluded, counted).</p>" + (
            _table(header, rows).replace("<td>", "<td style='white-space:nowrap'>")
        )
    if name == "random":
        header = ["m", "√(D/m)"] + [f"{m.label}: median ratio (unconverged)" for m in ms]
        rows = [
            [d, p]
            + [f"{_f(s[m.name]['median_ratio'][i])} ({s[m.name]['n_unconverged'][i]})" for m in ms]
            for i, (d, p) in enumerate(zip(s["dims"], s["predicted_ratio"], strict=True))
        ]
        return _table(header, rows)
    if name == "curvature":
        rows = []
        for m in ms:
            c = s[m.name]
            med = c.get("median_abs_curvature_by_rank") or [None]
            rows.append(
                [
                    m.label,
                    s["n_points"],
                    c["n_boundary_points"],
                    c.get("n_converged"),
                    c.get("n_unconverged"),
                    med[0],
                    med[-1],
                    _pct(c.get("fooling_rate_shared")),
                    _pct(c.get("fooling_rate_isotropic")),
                ]
            )
        note = "".join(
            f"<p class='note'>{html.escape(m.label)} is piecewise linear (ReLU or max pooling): "
            "its exact Hessian is zero at the boundary points, so the exact curvature says "
            "nothing; shown instead: the curvature at scale σ = "
            f"{s[m.name].get('scale')} (the Gaussian-smoothed boundary, docs/curvature.md), "
            f"median standard error of κ₁ {s[m.name].get('median_top_stderr', 0):.3g}.</p>"
            for m in ms
            if not s[m.name].get("smooth_network", True)
        )
        return note + _table(
            [
                "model",
                "examples",
                "boundary points",
                "curvatures converged",
                "unconverged",
                "median |κ₁|",
                f"median |κ_{s['num']}|",
                "fooling rate: shared subspace",
                "fooling rate: isotropic",
            ],
            rows,
        )
    if name == "loss_hessian":
        return _table(
            ["model", "examples", "converged", "unconverged", "median top eigenvalue"],
            [
                [
                    m.label,
                    s["n_points"],
                    s[m.name]["n_converged"],
                    s[m.name]["n_unconverged"],
                    s[m.name]["median_top_eigenvalue"],
                ]
                for m in ms
            ],
        )
    if name == "slices":
        return _table(
            [
                "model",
                "example",
                "classes (y, k)",
                "half-width",
                "boundary points: curved / flat / data plane",
            ],
            [
                [
                    m.label,
                    s[m.name].get("example"),
                    str(s[m.name].get("classes")),
                    s[m.name].get("extent"),
                    " / ".join(
                        str(s[m.name].get(f"{t}_boundary_points"))
                        for t in ("curved", "flat", "data")
                    ),
                ]
                for m in ms
                if "example" in s[m.name]
            ],
        )
    if name == "nads":
        ev = s["eigenvalues"]
        return _table(
            ["architecture", "networks", "input shape", "λ₁", f"λ_{len(ev)}", "λ₁/λ_last"],
            [
                [
                    s["architecture"],
                    s["num_networks"],
                    "×".join(map(str, s["input_shape"])),
                    ev[0],
                    ev[-1],
                    s["eigenvalue_ratio_first_last"],
                ]
            ],
        )
    if name == "minimal":
        searches = s.get("searches") or []
        return _table(
            ["model", "median ratio", "90% ratio", "max ratio", "examples with ratio > 1.05",
             "median minimal margin", *(f"minimum found by {n}" for n in searches),
             "unconverged"],
            [
                [
                    m.label, s[m.name]["ratio"].get("median"), s[m.name]["ratio"].get("p90"),
                    s[m.name]["ratio"].get("max"), _pct(s[m.name]["ratio"].get("above_1_05")),
                    s[m.name].get("median_minimal_margin"),
                    *(_pct(s[m.name]["found_by"].get(n)) for n in searches),
                    s[m.name]["n_unconverged"],
                ]
                for m in ms
            ],
        )  # fmt: skip
    if name == "thickness":
        return _table(
            ["model", "median", "25%", "75%", "valid", "excluded"],
            [
                [
                    m.label,
                    s[m.name].get("median"),
                    s[m.name].get("q25"),
                    s[m.name].get("q75"),
                    s[m.name]["n_valid"],
                    s[m.name]["n_excluded"],
                ]
                for m in ms
            ],
        )
    if name == "frequency":
        return _table(
            ["model", "clean error", "mean error", "max error", "low frequencies",
             "high frequencies", "invalid"],
            [[m.label, *(_pct(s[m.name][k]) for k in ("clean_error", "mean_error", "max_error",
              "mean_error_low_frequencies", "mean_error_high_frequencies")),
              s[m.name]["n_invalid"]] for m in ms],
        )  # fmt: skip
    if name == "noise":
        low, top = min(s["sigmas"]), max(s["sigmas"])

        def reached(v):
            if v is None or v in _NON_FINITE:
                return f"not reached (> {top:g})"
            return f"≤ {low:g}" if v <= low else _f(v, 3)

        noise = _table(
            ["model"] + [f"σ = {v:g}" for v in s["sigmas"]]
            + ["σ at 10 % error", "σ at 50 % error", "invalid"],
            [[m.label] + [f"{_f(_pct(e))} ({_f(_pct(p))})" for e, p in
                          zip(s[m.name]["error"], s[m.name]["predicted_error"], strict=True)]
             + [reached(s[m.name]["sigma_at_10pct_error"]),
                reached(s[m.name]["sigma_at_50pct_error"]), s[m.name]["n_invalid"]]
             for m in ms],
        )  # fmt: skip
        acc = {m.name: s[m.name]["corruption_accuracy"] for m in ms}
        corr = _table(
            ["corruption"] + [f"{m.label}: accuracy (%) at severity 1, 2, 3, 4, 5" for m in ms],
            [[c.replace("_", " ")] + [" ".join(f"{100 * float(v):.0f}" for v in acc[m.name][c])
                                      for m in ms]
             for c in s["corruptions"]],
        )  # fmt: skip
        return (
            "<p>Error in Gaussian noise of per-pixel standard deviation σ (no clipping), and in "
            "brackets the error Φ(-d/σ) a flat boundary at each example's DeepFool distance d "
            "would give. “Not reached”: the error stays below that rate up to the largest σ "
            "tried; “≤”: it is reached at the smallest σ tried already.</p>"
            + noise.replace("<td>", "<td style='white-space:nowrap'>")
            + "<p>Accuracy under common corruptions:</p>"
            + corr
        )
    if name == "interpretability":
        return _table(
            ["model", "median alignment", "25%", "75%", "valid", "excluded",
             "corr(alignment·‖x‖, margin)", "classes reached by synthesis", "mean confidence"],
            [[m.label, s[m.name].get("alignment_median"), s[m.name].get("alignment_q25"),
              s[m.name].get("alignment_q75"), s[m.name]["alignment_n_valid"],
              s[m.name]["alignment_n_excluded"], s[m.name]["correlation_alignment_norm_vs_margin"],
              f"{s[m.name]['synthesis_success']}/{s[m.name]['synthesis_classes']}",
              _pct(s[m.name]["synthesis_mean_confidence"])] for m in ms],
        )  # fmt: skip
    return ""


def _sizes_table(sizes: dict) -> str:
    """The problem sizes as a two-column table (folded: a reader rarely needs them)."""
    rows = [[k.replace("_", " "), ", ".join(map(str, v)) if isinstance(v, list) else str(v)]
            for k, v in sizes.items()]  # fmt: skip
    return (
        "<details><summary>problem sizes of every stage (the <code>sizes</code> of "
        "<code>results.json</code>)</summary>"
        + _table(["size", "value"], rows, kv=True)
        + "</details>"
    )


def section_order(record: dict) -> list[str]:
    """The sections of ``record`` in the order the analysis runs them
    (:data:`geomrobust.report.STAGES`: accuracy and DeepFool margins first, the stages that
    build on them after), not the alphabetical order of the JSON keys."""

    present = record["sections"]
    return [n for n in STAGES if n in present] + sorted(set(present) - set(STAGES))


def write_html(out, record: dict, figures: dict, models) -> Path:
    """Write ``out/index.html`` from the ``results.json`` record and the figure list.

    Sections follow the order of the analysis (:func:`section_order`) behind a table of
    contents; every table lists the models in the order of ``models`` (the standard model
    before the robust one in the default report)."""
    out = Path(out)
    st = record["settings"]
    df = st.get("deepfool", {})
    box = df.get("bounds")
    order = section_order(record)
    toc = "".join(
        f"<li><a href='#{html.escape(n)}'>{html.escape(_title(n))}</a></li>" for n in order
    )
    model_rows = []
    for m in models:
        r = record["models"].get(m.name)
        if r is None:
            continue
        model_rows.append([
            r["label"], r["method"], _pct(r["accuracy"]), r["smooth"],
            (r["checkpoint_sha256"] or "")[:16] + "…", r["checkpoint_path"],
        ])  # fmt: skip
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>geomrobust report</title><style>{CSS}</style></head><body>",
        "<h1>Decision-boundary geometry report</h1>",
        f"<p>geomrobust {html.escape(record['geomrobust_version'])}, created "
        f"{html.escape(record['created'])}; total time "
        f"{record['timings']['total_seconds']:.1f} s. All numbers are in "
        "<code>results.json</code>; every figure is a PNG beside this file. Fractions "
        "(accuracies, error rates, shares of examples) are shown as percentages.</p>",
        "<nav><b>Contents</b><ol><li><a href='#settings'>Settings and models</a></li>"
        f"{toc}</ol></nav>",
        "<h2 id='settings'>Settings and models</h2>",
        _table(
            ["setting", "value"],
            [
                ["dataset (test split)", st["dataset"]],
                ["image size", "as stored" if st["resize"] is None else str(st["resize"])],
                ["held-out examples analysed", st["n"]],
                ["quick mode", st["quick"]],
                ["PRNG seed", st["key"]],
                [
                    "DeepFool",
                    f"overshoot {df.get('overshoot', 0.02)}, at most {df.get('max_iter', 50)} "
                    f"iterations, around the predicted labels, "
                    + ("no box" if not box else f"inside the box [{box[0]:g}, {box[1]:g}]"),
                ],
            ],
            kv=True,
        ),
        _sizes_table(st["sizes"]),
        "<h3>Models</h3>",
        _table(
            ["model", "method", "test accuracy", "smooth (C²)", "checkpoint sha256", "path"],
            model_rows,
        ),
    ]
    for name in order:
        s = record["sections"][name]
        t = record["timings"]["stages"].get(name, {})
        secs = t.get("seconds")
        when = f" ({secs:.1f} s{', reused' if t.get('reused') else ''})" if secs else ""
        parts.append(f"<h2 id='{html.escape(name)}'>{html.escape(_title(name))}</h2>")
        parts.append(
            f"<p class='intro'>{html.escape(INTRO.get(name, _title(name) + '.'))}"
            f"<small>{when}</small></p>"
        )
        parts.append(_section_table(name, s, models))
        for f in figures.get(name, []):
            parts.append(
                f"<figure><img src='{html.escape(f['file'])}' alt='{html.escape(f['title'])}'>"
                f"<figcaption><b>{html.escape(f['title'])}.</b> {html.escape(f['caption'])}"
                "</figcaption></figure>"
            )
    if "thickness" not in record["sections"]:
        parts.append("<p class='note'>Boundary thickness was not computed.</p>")
    parts.append("</body></html>\n")
    return atomic_write(out / "index.html", "\n".join(parts))


def _title(name: str) -> str:

    title = STAGES[name][0] if name in STAGES else name.replace("_", " ")
    return title[:1].upper() + title[1:]
