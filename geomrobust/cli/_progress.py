"""Whether a subcommand draws progress bars."""

from __future__ import annotations

import os
import sys

__all__ = ["show_progress"]


def show_progress() -> bool | None:
    """True when the progress bars should show: stderr is a terminal, or
    ``$GEOMROBUST_PROGRESS`` is ``1`` (the rule of :func:`geomrobust.engine.progress_bar`);
    None otherwise (no bars)."""
    env = os.environ.get("GEOMROBUST_PROGRESS", "").strip().lower()
    if env in ("1", "true", "yes"):
        return True
    if env in ("0", "false", "no"):
        return None
    return True if sys.stderr.isatty() else None
