"""Fault-injection fixtures: the inference fixtures (tiny_tagger_dir), shared rather than copied.

tests/inference/conftest.py is only visible to tests under tests/inference/, so it is
loaded here by path and its fixtures re-exported (tests/conftest.py holds the session ones).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_policylens_inference_fixtures", Path(__file__).resolve().parents[1] / "inference" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_inference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_inference)

tiny_tagger_dir = _inference.tiny_tagger_dir
tiny_ensemble_dir = _inference.tiny_ensemble_dir
