"""Count XLA compilations: Optax's "no compilation on the second call" test, for JAX."""

import logging
from contextlib import contextmanager

import jax


class _Counter(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Finished XLA compilation of"):
            self.names.append(msg.split(" of ", 1)[1].split(" in ")[0])


@contextmanager
def compilations():
    """``with compilations() as c: ...`` then ``c.names``: every program XLA compiled inside
    (jitted programs and the small ones of eager operations alike)."""
    counter = _Counter()
    logger = logging.getLogger("jax._src.dispatch")
    old_level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles():
            yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(old_level)
