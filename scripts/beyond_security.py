"""Frequency sensitivity, noise and corruption robustness, and interpretability of a standard
vs a robust model, each against what the papers report:

* the Fourier heat map and the spectrum of DeepFool perturbations (Yin, Gontijo Lopes, Shlens,
  Cubuk, Gilmer, "A Fourier Perspective on Model Robustness in Computer Vision", NeurIPS 2019);
* error in Gaussian noise against the half-space prediction ``Φ(-d/σ)`` from the DeepFool
  margin (Ford, Gilmer, Carlini, Cubuk, ICML 2019) and accuracy under common corruptions
  (Hendrycks & Dietterich, ICLR 2019);
* gradient-image alignment (Etmann, Lunz, Maass, Schönlieb, ICML 2019), saliency maps and
  class synthesis by large targeted attacks (Tsipras et al., ICLR 2019).

Runs the report's stages ``margins frequency noise interpretability`` on the report's
standard and PGD-AT LeNets (trained once, cached) or on ``--checkpoint`` directories, and
prints each figure's verdict sentence (the literature's claim, this run's numbers, and
whether they agree). Writes OUT/index.html, OUT/results.json and the figures; resumes.

    python scripts/beyond_security.py --out beyond_security
"""

from __future__ import annotations

import argparse
import sys

from geomrobust.cli import OneLineParser, positive_int, run_script, seed


def parse_args(argv=None):
    p = OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--checkpoint", nargs="+", default=None, help="checkpoints to compare")
    p.add_argument("--quick", action="store_true", help="8×8 digits, 32 examples")
    p.add_argument("--n", type=positive_int, default=None, help="held-out examples")
    p.add_argument("--key", type=seed, default=0, help="PRNG seed")
    p.add_argument("--out", default="beyond_security", help="output directory")
    return p.parse_args(argv)


STAGES = ("margins", "frequency", "noise", "interpretability")


def main(argv=None) -> int:
    args = parse_args(argv)
    from geomrobust.engine import enable_compilation_cache

    enable_compilation_cache()  # ~/.cache/geomrobust/xla; GEOMROBUST_XLA_CACHE=0: off
    from geomrobust.report import run_report

    record = run_report(
        args.out, checkpoints=args.checkpoint, n=args.n, quick=args.quick, key=args.key,
        stages=STAGES,
    )  # fmt: skip
    for stage in STAGES[1:]:
        for fig in record["figures"].get(stage, []):
            cap = fig["caption"]
            i = cap.find("The literature reports")
            if i >= 0:
                print(f"[{stage}] {cap[i:]}")
    print(f"report: {args.out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
