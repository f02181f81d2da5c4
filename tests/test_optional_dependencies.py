"""Scoring needs only the core dependencies; every other verb names the extra it is missing.

Each check runs the real command in a subprocess whose imports of the optional libraries fail
(a ``sys.meta_path`` finder raises ImportError for them), as on a machine that installed only
``pip install deepaq``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
#: top-level modules that `pip install deepaq` (no extras) does not bring
OPTIONAL = ("lightning", "jsonargparse", "peft", "transformers", "huggingface_hub", "visqol",
            "numba", "av", "matplotlib", "sklearn", "scipy", "music21")

_RUNNER = """
import importlib.abc, sys

BLOCKED = set(sys.argv[1].split(","))


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Blocked())
module, func = sys.argv[2].split(":")
main = getattr(__import__(module, fromlist=[func]), func)
code = main(sys.argv[3:])
leaked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not leaked, leaked
sys.exit(code)
"""


def _run(blocked, entry: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DEEPAQ_CHECKPOINT", None)
    return subprocess.run([sys.executable, "-c", _RUNNER, ",".join(blocked), entry, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"]], ids=["deepaq", "score"])
def test_help_needs_no_optional_package(args):
    out = _run(OPTIONAL, "deepaq.cli:main", *args)
    assert out.returncode == 0, out.stderr
    assert "score" in out.stdout


def test_scoring_a_real_pair_needs_no_optional_package(tmp_path, music_clip, mp3_code):
    """A coded pair at another sample rate (so resampling runs), with the shipped checkpoint."""
    import soxr

    ref = music_clip("harpsichord", seconds=3.0, offset=0.5)
    sf.write(tmp_path / "ref.flac", ref.T, 48000)
    deg = soxr.resample(mp3_code(ref, 48).T, 48000, 44100)
    sf.write(tmp_path / "deg.wav", deg, 44100)
    out = _run(OPTIONAL, "deepaq.cli:main", "score", "ref.flac", "deg.wav", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)

    from deepaq import Scorer

    expected = Scorer.from_pretrained().score(tmp_path / "ref.flac", tmp_path / "deg.wav")
    assert float(fields["distance"]) == pytest.approx(expected.distance, rel=1e-4)
    assert float(fields["distance"]) > 0


@pytest.mark.parametrize(("entry", "args", "missing", "extra"), [
    ("deepaq.cli:main", ["fit", "-c", "configs/train/tiny.yaml"], "lightning", "train"),
    ("deepaq.cli:main", ["convert-mert", "nowhere", "out"], "transformers", "train"),
    ("data_prep.cli:main", ["build", "MUSIC", "-o", "corpus"], "av", "prep"),
    ("data_prep.cli:main", ["build", "MUSIC", "-o", "corpus"], "visqol", "prep"),
], ids=["fit", "convert-mert", "prep-av", "prep-visqol"])
def test_a_missing_extra_is_one_line_naming_the_install_command(tmp_path, music_file, entry, args,
                                                                 missing, extra):
    """Stopped at start-up (exit 2), not recorded as a failure of every item."""
    args = [str(music_file()) if a == "MUSIC" else str(REPO / a) if a.startswith("configs/")
            else a for a in args]
    out = _run([missing], entry, *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"'{missing}'" in lines[0] and f"pip install 'deepaq[{extra}]'" in lines[0]


def test_the_extras_named_in_hints_are_the_ones_pyproject_declares():
    tomllib = pytest.importorskip("tomllib")
    from deepaq.extras import EXTRA_OF_MODULE, MODULES_OF_EXTRA

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    module_of = {"visqol-python": "visqol", "scikit-learn": "sklearn"}

    def modules(requirements: list[str]) -> set[str]:
        names = {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
                 for r in requirements}
        return {module_of.get(n, n).replace("-", "_") for n in names}

    core = modules(project["dependencies"])
    assert not core & set(OPTIONAL), core & set(OPTIONAL)
    for extra, held in MODULES_OF_EXTRA.items():
        assert held <= modules(extras[extra]) | {"huggingface_hub"}, extra  # via transformers
    assert set(EXTRA_OF_MODULE.values()) <= set(extras)
    assert set(OPTIONAL) <= set(EXTRA_OF_MODULE)
