"""A built wheel works on its own: it installs into a clean environment and scores a pair with the
shipped checkpoint, whose files (and the codec grids) travel inside the wheel as package data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
#: what the wheel is built from (a copy, so building never writes into the source tree)
SOURCES = ("pyproject.toml", "README.md", "deepaq", "data_prep", "checkpoints", "configs")


def _env() -> dict:
    """The environment without PYTHONPATH: only the venv's own site-packages may supply deepaq."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEEPAQ_CHECKPOINT")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools "
                                             "(pip install -e '.[dev]' installs it)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp / "dist"), str(src)], check=True, env=_env(), cwd=tmp)
    (built,) = (tmp / "dist").glob("deepaq-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; its dependencies (torch, numpy, ...) are the test
    environment's, reached through a .pth line so nothing is downloaded or rebuilt."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   env=_env())
    python = root / "bin" / "python"
    site = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True,
        env=_env()).strip())
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "-q", str(wheel)], check=True, env=_env())
    return root


def test_wheel_holds_every_module_the_checkpoint_and_the_grids(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for pkg in ("deepaq", "data_prep")
               for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set(), "modules missing from the wheel (pyproject's packages list)"
    shipped = {f"deepaq/{p.relative_to(REPO)}" for folder in ("checkpoints", "configs")
               for p in (REPO / folder).rglob("*") if p.is_file()}
    assert shipped and shipped - names == set()


def test_installed_wheel_scores_a_pair_outside_the_source_tree(venv, tmp_path, music_clip,
                                                               mp3_code):
    ref = music_clip("guitar", seconds=3.0, offset=0.5)
    pair = tmp_path / "pair"
    pair.mkdir()
    sf.write(pair / "ref.flac", ref.T, 48000)
    sf.write(pair / "deg.flac", mp3_code(ref, 32).T, 48000)

    probe = ("import json, deepaq, data_prep, deepaq.scoring as s, data_prep.pipeline as p\n"
             "from data_prep.codecs import load_grid\n"
             "print(json.dumps({'deepaq': deepaq.__file__, 'data_prep': data_prep.__file__,"
             " 'checkpoint': str(s.DEFAULT_CHECKPOINT), 'grid': str(p.DEFAULT_GRID),"
             " 'conditions': len(load_grid(p.DEFAULT_GRID))}))")
    where = json.loads(subprocess.check_output([venv / "bin" / "python", "-c", probe], text=True,
                                               cwd=pair, env=_env()))
    for key in ("deepaq", "data_prep", "checkpoint", "grid"):
        assert Path(where[key]).resolve().is_relative_to(venv.resolve()), (key, where[key])
    from data_prep.codecs import load_grid

    assert where["conditions"] == len(load_grid(REPO / "configs" / "data_prep" / "default_grid.yaml"))

    out = subprocess.run([venv / "bin" / "deepaq", "score", "ref.flac", "deg.flac"], cwd=pair,
                         env=_env(), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)

    from deepaq import Scorer  # the source tree's copy of the same checkpoint

    expected = Scorer.from_pretrained().score(pair / "ref.flac", pair / "deg.flac")
    assert float(fields["distance"]) > 0
    assert float(fields["distance"]) == pytest.approx(expected.distance, rel=1e-4)
    assert float(fields["mos"]) == pytest.approx(expected.mos, abs=1e-3)
