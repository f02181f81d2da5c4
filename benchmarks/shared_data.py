"""Where the benchmarks find the data that does not ship: ViSQOL's conformance recordings and
the bvrnn listening test, under ``$DEEPAQ_SHARED_DIR/data`` (default ``../shared`` beside the
repository), as the tests do (``tests/conftest.py``)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DEEPAQ_SHARED_DIR") or REPO.parent / "shared") / "data"
#: ViSQOL's conformance set: ``cases.json`` and ``audio/*48_stereo.wav`` (10 TCDAudio14 recordings)
CONFORMANCE = DATA / "visqol_conformance"
RECORDINGS = CONFORMANCE / "audio"
#: the bvrnn MUSHRA test (validation only)
BVRNN = DATA / "listening_tests" / "bvrnn"
