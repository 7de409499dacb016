"""Deciders, LLM clients, the embedded model and the decision store.

Importing litellm or DSPy would otherwise fetch a model price map over the network, and
DSPy would create its disk cache in the home folder: both are pinned here, before any
submodule imports them.
"""

import os as _os
from pathlib import Path as _Path

_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
_os.environ.setdefault("DSPY_CACHEDIR", str(_Path(__file__).resolve().parents[1] / "data" / "dspy_cache"))
_os.environ.setdefault("LITELLM_TELEMETRY", "False")
