"""The geometry report: train (or reuse) models, run every analysis, write HTML + JSON + PNGs."""

from ._driver import SIZES as SIZES
from ._driver import model_settings as model_settings
from ._driver import run as run
from ._driver import run_report as run_report
from ._models import cached_model as cached_model
from ._models import default_cache_dir as default_cache_dir
from ._models import model_cache_key as model_cache_key
from ._models import train_model as train_model
from ._stages import STAGES as STAGES
