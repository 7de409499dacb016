"""Delegation decisions on Temporal: who handles each task an AI assistant receives.

The folders are the architecture (see the README): ``core`` (wire contract, names, settings),
``store``, ``rollout``, ``deciders``, ``learning``, ``activities``, ``workflows``,
``devstack``, ``worker`` and ``cli``.

Importing litellm or DSPy would otherwise fetch a model price map over the network, and
DSPy would create its disk cache in the home folder: both are pinned here, before any
submodule imports them. ``os.path`` rather than ``pathlib``: workflow sandboxes re-import
this package and refuse ``Path.resolve``.
"""

import os as _os

_PROJECT_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
_os.environ.setdefault("DSPY_CACHEDIR", _os.path.join(_PROJECT_ROOT, "data", "dspy_cache"))
_os.environ.setdefault("LITELLM_TELEMETRY", "False")
