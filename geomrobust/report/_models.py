"""Models of the report: train a standard and a PGD-adversarially-trained LeNet, or reuse them.

A trained model is cached as an ordinary ``geomrobust`` checkpoint directory (the format read
by ``geomrobust curvature --checkpoint``) under ``cache_dir/<name>-<hash>``, where the hash
covers every training setting and the package version. A second report with the same settings
loads the checkpoint instead of training again.

The adversarially trained model uses PGD adversarial training (Madry, Makelov, Schmidt,
Tsipras, Vladu, "Towards deep learning models resistant to adversarial attacks", ICLR 2018):
minimize ``E max_{||δ||_∞ ≤ ε} ℓ(x + δ, y)`` with the inner maximum approximated by PGD with a
random start (:func:`geomrobust.train.pgd_at_loss`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from geomrobust import __version__
from geomrobust.io import lock_folder, settings_hash
from geomrobust.train import load_checkpoint, save_checkpoint, train_from_settings

__all__ = ["cached_model", "default_cache_dir", "model_cache_key", "train_model"]


def default_cache_dir() -> Path:
    """``$GEOMROBUST_CACHE_DIR/models`` if set, else ``~/.cache/geomrobust/models``."""
    root = os.environ.get("GEOMROBUST_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "geomrobust"
    return base / "models"


def model_cache_key(settings: dict[str, Any]) -> str:
    """First 16 hex digits of :func:`geomrobust.io.settings_hash` of ``settings`` and the
    package version."""

    return settings_hash({"settings": settings, "version": __version__})[:16]


def train_model(
    settings: dict[str, Any],
    out: str | os.PathLike,
    *,
    init: str | os.PathLike | None = None,
    progress: bool | None = None,
):
    """Train the model described by ``settings`` and save a checkpoint at ``out``.

    ``settings``: a record of :func:`geomrobust.train.train_from_settings` (the training
    path of ``geomrobust train`` too), e.g. :func:`geomrobust.report.model_settings`; the
    checkpoint's metadata is that of ``geomrobust train`` plus ``trained_by``, so every
    analysis command can read it. ``init`` : a checkpoint of the same architecture to start
    from (fine-tuning, e.g. PGD-AT from the standard model, which converges in a few epochs
    where PGD-AT from scratch sits on a long chance-level plateau on small data); None starts
    from a fresh initialization. Returns the checkpoint path.
    """

    model, metadata = train_from_settings(settings, init=init, progress=progress)
    metadata["trained_by"] = "geomrobust report"
    return save_checkpoint(out, model, metadata, overwrite=True)


def cached_model(
    name: str,
    settings: dict[str, Any],
    *,
    cache_dir: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    progress: bool | None = None,
    log=None,
) -> tuple[Path, bool]:
    """The checkpoint for ``settings``: loaded from the cache, or trained and cached.

    ``init`` is passed to :func:`train_model`; put what identifies it (e.g. its cache key)
    into ``settings`` so the cache key changes with it.
    Returns ``(path, trained)`` with ``trained`` False when the cached checkpoint was reused.
    A damaged cache entry (unreadable checkpoint) is retrained and replaced. The entry is
    locked while it is read or trained, so concurrent reports never train it twice at once.
    """

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / f"{name}-{model_cache_key(settings)}"
    # two reports sharing the cache: the second waits for the first to finish this entry
    with lock_folder(root, what="the model cache", entry=path.name, wait=True):
        if (path / "metadata.json").is_file():
            try:
                load_checkpoint(path)
                return path, False
            except (OSError, ValueError) as e:
                if log is not None:
                    log(f"cached model {path} is unreadable ({e}); training it again")
        # training prints nothing on stdout; keep any library chatter on stderr
        with contextlib.redirect_stdout(sys.stderr):
            train_model(settings, path, init=init, progress=progress)
    return path, True
