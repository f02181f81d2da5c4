"""Demo corpus source: public-domain scores from music21's corpus, synthesised to 48 kHz FLAC.

Why: anyone can then build a real-music coded corpus without owning music. Scores come from the
corpus shipped inside PyPI ``music21`` (Bach chorales, Beethoven/Haydn/Mozart quartets, Palestrina,
folk-tune collections, ...), restricted by default to composers/collections whose *compositions*
are long out of copyright (see :data:`COMPOSERS`; note that music21 says some *encodings* carry
non-commercial terms, see ``music21/corpus/license.txt``). Each piece is cut to its first measures,
given a seeded General-MIDI instrumentation (piano, strings, winds, brass, guitar, organ, ...) and
stereo placement, written to MIDI by music21 and rendered by the ``fluidsynth`` program with the
FluidR3 GM soundfont (Debian ``fluidsynth`` + ``fluid-soundfont-gm``). Renders are capped at
``max_seconds``, gain-normalised (RMS target with a peak ceiling), checked for silence and written
as lossless FLAC with a JSONL index that ``deepaq-prep build`` accepts as input.

Deterministic: the same seed gives the same pieces, instrumentations and audio, for any ``jobs``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 48000
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
INSTALL_HINT = "sudo apt-get install fluidsynth fluid-soundfont-gm"
MUSIC21_HINT = "pip install 'deepaq[demo]'"

#: music21 corpus folder -> composer (or collection) name. Only works whose compositions are in the
#: public domain (composers dead well over a century, or traditional tunes from 18th/19th-century
#: printed collections). Left out on purpose: schoenberg, webern, beach, johnson_j_r (20th-century
#: composers), essenFolksong (legal status unclear, per its own licence file), and teaching,
#: analysis or demo files (theoryExercises, leadSheet, demos, nottingham-dataset, miscFolk).
COMPOSERS: dict[str, str] = {
    "bach": "Johann Sebastian Bach",
    "cpebach": "Carl Philipp Emanuel Bach",
    "handel": "George Frideric Handel",
    "corelli": "Arcangelo Corelli",
    "haydn": "Joseph Haydn",
    "mozart": "Wolfgang Amadeus Mozart",
    "beethoven": "Ludwig van Beethoven",
    "schubert": "Franz Schubert",
    "weber": "Carl Maria von Weber",
    "chopin": "Frederic Chopin",
    "schumann_robert": "Robert Schumann",
    "schumann_clara": "Clara Schumann",
    "verdi": "Giuseppe Verdi",
    "joplin": "Scott Joplin",
    "liliuokalani": "Liliuokalani",
    "palestrina": "Giovanni Pierluigi da Palestrina",
    "monteverdi": "Claudio Monteverdi",
    "josquin": "Josquin des Prez",
    "lusitano": "Vicente Lusitano",
    "luca": "Luca (trecento Gloria)",
    "ciconia": "Johannes Ciconia",
    "trecento": "Trecento (14th-century Italy)",
    "airdsAirs": "Traditional (Aird's Airs, 1782-1803)",
    "oneills1850": "Traditional (O'Neill's Music of Ireland, 1903)",
    "ryansMammoth": "Traditional (Ryan's Mammoth Collection, 1883)",
}

#: Score formats tried, best first when one work exists in several (e.g. .mxl and .krn).
_FORMATS = (".mxl", ".musicxml", ".xml", ".krn", ".abc")

#: Ensembles: GM programs assigned to parts from the top voice down (the list is cycled; the last
#: entry is kept for the lowest part when a piece has more parts than the list).
ENSEMBLES: dict[str, list[int]] = {
    "piano": [0],                       # acoustic grand
    "bright_piano": [1],
    "electric_piano": [4],
    "harpsichord": [6],
    "organ": [19],                      # church organ
    "reed_organ": [20],
    "strings": [40, 40, 41, 42],        # violin, violin, viola, cello
    "string_ensemble": [48],
    "pizzicato": [45],
    "woodwinds": [73, 68, 71, 70],      # flute, oboe, clarinet, bassoon
    "brass": [56, 60, 57, 58],          # trumpet, french horn, trombone, tuba
    "saxophones": [64, 65, 66, 67],
    "guitar": [24, 24, 25, 32],         # nylon, nylon, steel, acoustic bass
    "mallets": [11, 12, 13, 12],        # vibraphone, marimba, xylophone
    "choir": [52],                      # choir aahs
    "accordion": [21],
    "mixed": [],                        # a random melodic program per part
}

#: Ensembles that are one instrument (all parts on one keyboard), panned narrowly.
_KEYBOARDS = frozenset({"piano", "bright_piano", "electric_piano", "harpsichord", "organ",
                        "reed_organ", "accordion"})

#: Melodic GM programs used by the "mixed" ensemble (no percussion, FX or sound effects).
_MIXED_PROGRAMS = [0, 1, 4, 6, 11, 12, 19, 21, 22, 24, 25, 26, 32, 33, 40, 41, 42, 43, 45, 46,
                   48, 52, 56, 57, 58, 60, 64, 65, 66, 68, 70, 71, 72, 73, 74, 75, 79, 105]


class RenderSetupError(RuntimeError):
    """A missing system dependency (fluidsynth, soundfont) or Python extra (music21)."""


@dataclass(frozen=True)
class Candidate:
    """One work of the music21 corpus that may be rendered."""

    key: str
    composer_id: str
    source: str          # path relative to the music21 corpus folder
    path: str            # absolute path
    number: int | None = None   # tune number (ABC ``X:``) inside a multi-tune collection file


@dataclass(frozen=True)
class RenderSettings:
    max_seconds: float = 30.0
    min_seconds: float = 2.0
    seed: int = 0
    target_rms_dbfs: float = -20.0
    peak_dbfs: float = -1.0
    silence_dbfs: float = -60.0
    synth_gain: float = 0.4
    timeout_s: float = 120.0
    ensembles: tuple[str, ...] = tuple(ENSEMBLES)
    room_rt60_s: float = 0.0           # 0: dry, as fluidsynth renders (data_prep.acoustics)
    room_wet: float = 0.5              # reverberant share of the power
    noise_floor_db: float | None = None  # noise floor this far below the RMS level; None: none
    subtype: str = "PCM_24"
    stems: bool = False                # also write each part as its own stem (they sum to the mix)


# -- set-up checks ------------------------------------------------------------------------------

def check_setup(soundfont: str | os.PathLike = SOUNDFONT) -> tuple[str, Path]:
    """Return (fluidsynth executable, soundfont path) or say exactly what to install."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderSetupError(f"the 'fluidsynth' program was not found on PATH; install it with: "
                               f"{INSTALL_HINT}")
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise RenderSetupError(f"General-MIDI soundfont {soundfont} not found; install it with: "
                               f"{INSTALL_HINT}")
    _import_music21()
    return exe, soundfont


def _import_music21():
    try:
        import music21
    except ImportError as exc:
        raise ImportError(f"rendering scores needs music21: {MUSIC21_HINT}") from exc
    return music21


# -- choosing works -----------------------------------------------------------------------------

def _corpus_root() -> Path:
    return Path(_import_music21().__file__).parent / "corpus"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")


def list_candidates(composers: list[str] | None = None) -> list[Candidate]:
    """Works of the chosen composers, one file per work (best format), sorted by source path."""
    chosen = list(COMPOSERS) if composers is None else list(composers)
    unknown = [c for c in chosen if c not in COMPOSERS]
    if unknown:
        raise ValueError(f"unknown or excluded composer(s) {unknown}; choose from "
                         f"{', '.join(COMPOSERS)}")
    root = _corpus_root()
    best: dict[tuple[str, str], Path] = {}
    for composer in chosen:
        folder = root / composer
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in _FORMATS or not path.is_file():
                continue
            work = str(path.relative_to(root).with_suffix(""))
            old = best.get((composer, work))
            if old is None or _FORMATS.index(path.suffix.lower()) < _FORMATS.index(old.suffix):
                best[(composer, work)] = path
    out = []
    for (composer, work), path in sorted(best.items()):
        rel = str(path.relative_to(root))
        key = _safe(work.replace("/", "__"))
        numbers = _abc_tune_numbers(path) if path.suffix.lower() == ".abc" else []
        if len(numbers) > 1:
            # a book of tunes: every tune is a work (parsing one tune takes ~0.1 s, a book ~30 s)
            out += [Candidate(key=f"{key}__X{n}", composer_id=composer, source=rel,
                              path=str(path), number=n) for n in numbers]
        else:
            out.append(Candidate(key=key, composer_id=composer, source=rel, path=str(path)))
    return out


def _abc_tune_numbers(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return sorted({int(n) for n in re.findall(r"(?m)^X:\s*(\d+)", text)})


def plan_order(candidates: list[Candidate], seed: int) -> list[Candidate]:
    """Seeded order that interleaves composers, so that a few pieces already span many styles
    (Palestrina alone has >1000 works and would otherwise dominate)."""
    rng = random.Random(f"render-order|{seed}")
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.composer_id, []).append(c)
    names = sorted(groups)
    rng.shuffle(names)
    for name in names:
        rng.shuffle(groups[name])
    queues = [deque(groups[n]) for n in names]
    order: list[Candidate] = []
    while queues:
        for q in list(queues):
            order.append(q.popleft())
            if not q:
                queues.remove(q)
    return order


def find_work(source: str) -> Candidate:
    """A single work by its corpus path, e.g. ``bach/bwv66.6`` (suffix optional)."""
    source = source.strip("/")
    composer = source.split("/", 1)[0]
    for c in list_candidates([composer] if composer in COMPOSERS else None):
        if source in (c.source, str(Path(c.source).with_suffix("")), c.key):
            return c
    raise ValueError(f"no work {source!r} in the music21 corpus (public-domain composers: "
                     f"{', '.join(COMPOSERS)})")


# -- rendering one piece ------------------------------------------------------------------------

def choose_instrumentation(n_parts: int, rng: random.Random,
                           ensembles: tuple[str, ...]) -> tuple[str, list[int], list[int]]:
    """(ensemble, GM program per part, pan 0..127 per part), top part first."""
    ensemble = rng.choice(sorted(ensembles))
    palette = ENSEMBLES[ensemble]
    if not palette:
        programs = [rng.choice(_MIXED_PROGRAMS) for _ in range(n_parts)]
    elif n_parts <= len(palette):
        # keep the lowest instrument for the lowest part (a cello under violins, not a viola)
        programs = palette[:n_parts - 1] + [palette[-1]] if n_parts > 1 else [palette[0]]
    else:
        programs = [palette[min(i, len(palette) - 2)] for i in range(n_parts - 1)] + [palette[-1]]
    if n_parts == 1:
        pans = [64]
    elif ensemble in _KEYBOARDS:
        # one instrument played by several parts: a narrow image, treble right as the player hears
        spread = rng.uniform(0.1, 0.3)
        pans = [round(64 - 63 * spread * (2 * i / (n_parts - 1) - 1)) for i in range(n_parts)]
    else:
        # an ensemble: parts spread across the stage, either way round
        spread = rng.uniform(0.3, 0.8)
        pans = [round(64 + 63 * spread * (2 * i / (n_parts - 1) - 1)) for i in range(n_parts)]
        if rng.random() < 0.5:
            pans.reverse()
    return ensemble, programs, pans


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Give up on a piece (parse + MIDI + synth) after ``seconds``; a no-op off the main thread."""
    import threading

    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def _raise(signum, frame):
        raise TimeoutError(f"gave up after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _excerpt_score(score, max_seconds: float):
    """The first measures of a score, enough for ``max_seconds`` at its opening tempo."""
    from music21 import meter, stream, tempo

    flat = score.flatten()
    marks = flat.getElementsByClass(tempo.MetronomeMark)
    qpm = marks.first().getQuarterBPM() if marks.first() is not None else 120.0
    sigs = flat.getElementsByClass(meter.TimeSignature)
    bar_ql = sigs.first().barDuration.quarterLength if sigs.first() is not None else 4.0
    seconds_per_bar = max(bar_ql * 60.0 / (qpm or 120.0), 0.25)
    n_bars = math.ceil(1.5 * max_seconds / seconds_per_bar) + 2
    if not score.recurse().getElementsByClass(stream.Measure).first():
        return score  # unmeasured (some chant/abc); fluidsynth output is cut afterwards
    return score.measures(0, n_bars)


def _strip_repeats(score) -> None:
    """Cutting a score can leave half a repeat, which music21's MIDI writer refuses to expand."""
    from music21 import bar, repeat, spanner, stream

    for m in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(m.leftBarline, bar.Repeat):
            m.leftBarline = None
        if isinstance(m.rightBarline, bar.Repeat):
            m.rightBarline = None
    for el in list(score.recurse().getElementsByClass((repeat.RepeatExpression,
                                                      spanner.RepeatBracket))):
        if el.activeSite is not None:
            el.activeSite.remove(el)


def _midi_file(score, programs: list[int], pans: list[int]):
    """music21 -> MidiFile with our programs, plus a pan controller per part."""
    from music21 import instrument, midi, repeat

    for part, program in zip(score.parts, programs):
        for inst in list(part.recurse().getElementsByClass(instrument.Instrument)):
            if inst.activeSite is not None:
                inst.activeSite.remove(inst)
        new = instrument.Instrument()
        new.midiProgram = program
        part.insert(0, new)
    try:
        mf = midi.translate.streamToMidiFile(score)
    except repeat.ExpanderException:
        _strip_repeats(score)
        mf = midi.translate.streamToMidiFile(score)
    # one track per part, in part order, after the conductor track: the k-th track that sets a
    # program belongs to the k-th part
    remaining = deque(pans)
    for track in mf.tracks:
        events = track.events
        for i, ev in enumerate(events):
            if ev.type == midi.ChannelVoiceMessages.PROGRAM_CHANGE:
                pan = remaining.popleft() if remaining else 64
                cc = midi.MidiEvent(track, type=midi.ChannelVoiceMessages.CONTROLLER_CHANGE,
                                    channel=ev.channel)
                cc.parameter1, cc.parameter2 = 10, pan
                events[i + 1:i + 1] = [midi.DeltaTime(track, time=0, channel=ev.channel), cc]
                break
    return mf


def _synthesise(midi_path: Path, settings: RenderSettings) -> np.ndarray:
    """fluidsynth -> (2, N) float32, reading at most ``max_seconds`` (+2 s for a silent start).

    fluidsynth renders until every voice has died away, and some scores leave a looped-sample note
    sounding for ever: it then writes audio without end (hundreds of MB a minute). So it streams
    raw samples to a pipe and is killed as soon as enough has arrived or the time is up.
    """
    import time

    exe, soundfont = check_setup()
    cmd = [exe, "-ni", "-q", "-F", "-", "-T", "raw", "-O", "float", "-E", "little",
           "-r", str(SAMPLE_RATE), "-g", str(settings.synth_gain), str(soundfont), str(midi_path)]
    want = int((settings.max_seconds + 2.0) * SAMPLE_RATE) * 2 * 4
    chunks: list[bytes] = []
    got = 0
    deadline = time.monotonic() + settings.timeout_s
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            assert proc.stdout is not None
            while got < want:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"fluidsynth still running after {settings.timeout_s:.0f} s")
                chunk = proc.stdout.read(min(1 << 20, want - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            finished = got < want
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if finished and proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"fluidsynth failed ({proc.returncode}): "
                               f"{err.read().decode(errors='replace').strip()[-300:]}")
    data = np.frombuffer(b"".join(chunks), dtype="<f4")
    data = data[:data.size - data.size % 2].reshape(-1, 2)
    return np.ascontiguousarray(data.T, dtype=np.float32)


def finish_audio(x: np.ndarray, settings: RenderSettings,
                 stems: list[np.ndarray] | None = None) -> np.ndarray | tuple:
    """Trim the leading silence, cut to ``max_seconds`` with a short fade, normalise the gain.

    Gain: scale to ``target_rms_dbfs`` unless that would push the peak over ``peak_dbfs``
    (then the peak sets the gain), so pieces sit at comparable loudness without clipping.
    With ``stems`` (the parts of ``x``), all get the same trim, fade and gain (the peak ceiling
    then holds for each of them too), and ``(mix, stems)`` is returned, the mix being the sum of
    the finished stems, so that the stems sum to the mix.
    """
    from deepaq.audio import rms_dbfs

    loud = np.flatnonzero(np.abs(x).max(axis=0) > 10 ** (-60 / 20))
    start = max(0, loud[0] - int(0.01 * SAMPLE_RATE)) if loud.size else 0
    cap = int(settings.max_seconds * SAMPLE_RATE)
    fade = int(0.05 * SAMPLE_RATE)

    def cut(y: np.ndarray) -> np.ndarray:
        y = y[:, start:]
        if y.shape[1] > cap:
            y = y[:, :cap].copy()
            y[:, -fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return y

    x = cut(x)
    parts = [cut(s) for s in stems] if stems is not None else []
    level = rms_dbfs(x)
    peak = max([float(np.abs(y).max()) if y.size else 0.0 for y in [x, *parts]])
    gain = np.float32(1.0)
    if math.isfinite(level) and peak > 0.0:
        gain_db = min(settings.target_rms_dbfs - level,
                      settings.peak_dbfs - 20 * math.log10(peak))
        gain = np.float32(10 ** (gain_db / 20))
    if stems is None:
        return (x * gain).astype(np.float32)
    parts = [(y * gain).astype(np.float32) for y in parts]
    return np.sum(parts, axis=0, dtype=np.float32), parts


def _stem_midis(mf, n_parts: int) -> list:
    """One MidiFile per part: the conductor track (tempo, metre) and that part's track."""
    from music21 import midi

    out = []
    for k in range(n_parts):
        one = midi.MidiFile()
        one.format = mf.format
        one.ticksPerQuarterNote = mf.ticksPerQuarterNote
        one.tracks = [mf.tracks[0], mf.tracks[k + 1]]
        out.append(one)
    return out


def _write_midi(mf, path: Path) -> Path:
    mf.open(str(path), "wb")
    mf.write()
    mf.close()
    return path


def stems_folder(out_path: str | os.PathLike) -> Path:
    """Where the stems of ``.../audio/<key>.flac`` go: ``.../stems/<key>/`` (outside ``audio/``, so
    that a folder input of ``audio/`` never mistakes a stem for a piece)."""
    out_path = Path(out_path)
    return out_path.parent.parent / "stems" / out_path.stem


def _recorded(audio: np.ndarray, settings: RenderSettings, key: str) -> np.ndarray:
    """The settings' room and noise floor (``data_prep.acoustics``), seeded by seed and piece."""
    from data_prep.acoustics import add_noise_floor, add_room

    seed = zlib.crc32(f"acoustics|{settings.seed}|{key}".encode())
    audio = add_room(audio, settings.room_rt60_s, settings.room_wet, seed=seed)
    if settings.noise_floor_db is not None:
        audio = add_noise_floor(audio, settings.noise_floor_db, seed=seed + 1)
    return audio


def render_piece(cand: Candidate, out_path: str | os.PathLike, settings: RenderSettings) -> dict:
    """Render one work to ``out_path`` (FLAC); returns its index row. Raises on any failure."""
    from music21 import converter, stream

    from deepaq.alignment import fit_length
    from deepaq.audio import rms_dbfs, write_audio

    rng = random.Random(f"render-piece|{settings.seed}|{cand.key}")
    with _deadline(settings.timeout_s), tempfile.TemporaryDirectory(prefix="deepaq-render-") as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 warns about every overfull measure
        if cand.number is not None:
            parsed = converter.parse(cand.path, number=cand.number, forceSource=True)
        else:
            parsed = converter.parse(cand.path, forceSource=True)
        if isinstance(parsed, stream.Opus):
            scores = list(parsed.scores)
            if not scores:
                raise ValueError("empty collection")
            parsed = scores[0]
        if not isinstance(parsed, stream.Score):
            wrapped = stream.Score()
            wrapped.insert(0, parsed)
            parsed = wrapped
        score = _excerpt_score(parsed, settings.max_seconds)
        n_parts = len(score.parts)
        if n_parts == 0:
            raise ValueError("score has no parts")
        ensemble, programs, pans = choose_instrumentation(n_parts, rng, settings.ensembles)
        mf = _midi_file(score, programs, pans)
        stems = None
        if settings.stems and len(mf.tracks) == n_parts + 1:
            # each part rendered alone (same tempo track): the stems, and their sum is the mix
            stems = [_synthesise(_write_midi(m, Path(tmp) / f"part{k}.mid"), settings)
                     for k, m in enumerate(_stem_midis(mf, n_parts))]
            n = max(y.shape[1] for y in stems)
            stems = [fit_length(y, n) for y in stems]
            audio = np.sum(stems, axis=0, dtype=np.float32)
        else:
            if settings.stems:
                raise ValueError(f"cannot split into stems: {len(mf.tracks) - 1} MIDI tracks "
                                 f"for {n_parts} parts")
            audio = _synthesise(_write_midi(mf, Path(tmp) / "piece.mid"), settings)
    raw_level = rms_dbfs(audio[:, :int(settings.max_seconds * SAMPLE_RATE)])
    if raw_level < settings.silence_dbfs:  # judged before normalisation, which would hide it
        shown = "-inf" if raw_level == -math.inf else f"{raw_level:.1f}"
        raise ValueError(f"silent render ({shown} dBFS < {settings.silence_dbfs} dBFS)")
    if stems is not None:
        audio, stems = finish_audio(audio, settings, stems)  # no room/noise: render_corpus checks
    else:
        audio = finish_audio(_recorded(audio, settings, cand.key), settings)
    duration = audio.shape[1] / SAMPLE_RATE
    level = rms_dbfs(audio)
    if duration < settings.min_seconds:
        raise ValueError(f"render too short ({duration:.2f} s < {settings.min_seconds} s)")
    write_audio(out_path, audio, SAMPLE_RATE, subtype=settings.subtype)
    stem_paths = []
    if stems is not None:
        folder = stems_folder(out_path)
        for k, y in enumerate(stems):
            write_audio(folder / f"{k:02d}.flac", y, SAMPLE_RATE, subtype=settings.subtype)
            stem_paths.append(f"stems/{Path(out_path).stem}/{k:02d}.flac")
    from music21 import instrument as m21instrument

    names = []
    for p in programs:
        try:
            names.append(m21instrument.instrumentFromMidiProgram(p).instrumentName)
        except Exception:  # noqa: BLE001 - a name is only decoration
            names.append(f"GM program {p}")
    md = parsed.metadata
    title = (md.title or md.movementName) if md is not None else None
    if not title or Path(title).suffix.lower() in _FORMATS:
        title = Path(cand.source).with_suffix("").as_posix()
    return {"key": cand.key, "path": None, "title": title,
            "composer": (md.composer if md is not None and md.composer else None)
            or COMPOSERS[cand.composer_id],
            "composer_id": cand.composer_id, "source": f"music21:{cand.source}",
            "tune_number": cand.number, "ensemble": ensemble, "programs": programs,
            "instruments": names, "pans": pans, "duration": round(duration, 6),
            "sample_rate": SAMPLE_RATE, "channels": int(audio.shape[0]),
            "rms_dbfs": round(level, 3), "peak": round(float(np.abs(audio).max()), 6),
            "room_rt60_s": settings.room_rt60_s, "room_wet": settings.room_wet,
            "noise_floor_db": settings.noise_floor_db,
            **({"stems": stem_paths} if stems is not None else {})}


def _render_job(cand: Candidate, out_path: str, settings: RenderSettings) -> dict:
    """Pool task: a row on success, a reject record on failure (never raises)."""
    try:
        return {"ok": True, "row": render_piece(cand, out_path, settings)}
    except Exception as exc:  # noqa: BLE001 - one bad score must not stop the corpus
        reason = f"{type(exc).__name__}: {exc}"
        return {"ok": False, "reject": {"key": cand.key, "source": f"music21:{cand.source}",
                                        "reason": reason[:500]}}


# -- the corpus ---------------------------------------------------------------------------------

def render_corpus(out_dir: str | os.PathLike, n_pieces: int = 50, max_seconds: float = 30.0,
                  seed: int = 0, jobs: int = 1, composers: list[str] | None = None,
                  works: list[str] | None = None, ensembles: list[str] | None = None,
                  progress: bool = True, **settings_kwargs) -> Path:
    """Render ``n_pieces`` works into ``out_dir/audio/*.flac`` and write ``out_dir/index.jsonl``.

    Works that fail (unparsable, timeout, silent, too short) are listed with the reason in
    ``out_dir/render_rejects.jsonl`` and replaced by the next work in the seeded order. ``works``
    (corpus paths like ``bach/bwv66.6``) renders exactly those works instead of a seeded choice.
    Index rows: key, path (relative to ``out_dir``), title, composer, composer_id, source,
    tune_number, ensemble, programs, instruments, pans, duration, sample_rate, channels,
    rms_dbfs, peak, room_rt60_s, room_wet, noise_floor_db and, with ``stems=True``, ``stems``:
    one FLAC per part (top part first) under ``out_dir/stems/<key>/``, relative to ``out_dir``,
    that sum to the mix (``deepaq-prep build`` reads the column for the separation families).
    """
    from tqdm import tqdm

    from deepaq.records import write_jsonl

    check_setup()
    if ensembles is not None:
        bad = [e for e in ensembles if e not in ENSEMBLES]
        if bad:
            raise ValueError(f"unknown ensemble(s) {bad}; choose from {', '.join(ENSEMBLES)}")
    settings = RenderSettings(max_seconds=float(max_seconds), seed=int(seed),
                              ensembles=tuple(ensembles or ENSEMBLES), **settings_kwargs)
    if settings.stems and (settings.room_rt60_s > 0 or settings.noise_floor_db is not None):
        raise ValueError("--stems cannot be combined with --room-rt60 or --noise-floor-db (the "
                         "room and the noise floor do not split into parts that sum to the mix)")
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    if works:
        order = [find_work(w) for w in works]
        n_pieces = min(n_pieces, len(order)) if n_pieces else len(order)
    else:
        order = plan_order(list_candidates(composers), seed)
    accepted: list[dict] = []
    rejects: list[dict] = []
    todo = iter(order)
    bar = tqdm(total=n_pieces, desc="render", unit="piece", disable=not progress, file=sys.stderr)

    def rel_path(c: Candidate) -> str:
        return f"audio/{c.key}.flac"

    def take(result: dict, cand: Candidate) -> None:
        if result["ok"] and len(accepted) < n_pieces:
            row = result["row"]
            row["path"] = rel_path(cand)
            accepted.append(row)
            bar.update(1)
        elif result["ok"]:  # rendered in parallel but not needed any more
            (out_dir / rel_path(cand)).unlink(missing_ok=True)
            shutil.rmtree(stems_folder(out_dir / rel_path(cand)), ignore_errors=True)
        else:
            rejects.append(result["reject"])
            bar.set_postfix(rejected=len(rejects))

    try:
        if jobs <= 1:
            for cand in todo:
                if len(accepted) >= n_pieces:
                    break
                take(_render_job(cand, str(out_dir / rel_path(cand)), settings), cand)
        else:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                pending: deque = deque()
                while True:
                    # never more in flight than still needed: results are taken in plan order,
                    # so the chosen set does not depend on ``jobs`` or on timing
                    while len(pending) < min(2 * jobs, n_pieces - len(accepted)):
                        cand = next(todo, None)
                        if cand is None:
                            break
                        pending.append((cand, pool.submit(_render_job, cand,
                                                          str(out_dir / rel_path(cand)), settings)))
                    if not pending:
                        break
                    cand, fut = pending.popleft()
                    take(fut.result(), cand)
                for cand, fut in pending:
                    take(fut.result(), cand)
    finally:
        bar.close()
    index = write_jsonl(out_dir / "index.jsonl", accepted)
    write_jsonl(out_dir / "render_rejects.jsonl", rejects)
    if len(accepted) < n_pieces:
        print(f"render: only {len(accepted)} of {n_pieces} pieces could be rendered "
              f"({len(rejects)} rejected, see {out_dir / 'render_rejects.jsonl'})", file=sys.stderr)
    return index


# -- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from deepaq.cli import HelpFormatter

    p = argparse.ArgumentParser(
        prog="deepaq-prep render", formatter_class=HelpFormatter,
        description="Render public-domain scores from the music21 corpus to 48 kHz stereo FLAC "
                    "with fluidsynth + the FluidR3 GM soundfont, as a music source for "
                    "'deepaq-prep build' (pass OUT/index.jsonl as its input). Needs: "
                    f"{INSTALL_HINT}; {MUSIC21_HINT}.")
    p.add_argument("out", nargs="?", help="output folder (audio/*.flac, index.jsonl)")
    p.add_argument("-n", "--pieces", type=int, default=50, help="number of pieces (default 50)")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="cap on each render's duration in seconds (default 30)")
    p.add_argument("--seed", type=int, default=0, help="choice of works and instruments")
    p.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--composers", nargs="+", metavar="NAME",
                   help="restrict to these music21 corpus folders (see --list)")
    p.add_argument("--works", nargs="+", metavar="PATH",
                   help="render exactly these works, e.g. bach/bwv66.6 mozart/k545/movement1_exposition")
    p.add_argument("--ensembles", nargs="+", metavar="NAME", choices=list(ENSEMBLES),
                   help=f"instrumentations to draw from (default all): {', '.join(ENSEMBLES)}")
    p.add_argument("--target-rms-dbfs", type=float, default=-20.0,
                   help="loudness target (the peak ceiling of -1 dBFS wins if lower)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="give up on a piece after this many seconds")
    p.add_argument("--bit-depth", type=int, choices=[16, 24], default=24,
                   help="FLAC sample format (default 24)")
    p.add_argument("--room-rt60", type=float, default=0.0, metavar="S",
                   help="reverberate in a diffuse room of this RT60 in seconds (default 0: dry)")
    p.add_argument("--room-wet", type=float, default=0.5,
                   help="reverberant share of the power with --room-rt60 (default 0.5)")
    p.add_argument("--noise-floor-db", type=float, default=None, metavar="DB",
                   help="add a noise floor this many dB below the RMS level (default: none); "
                        "real recordings have a room and a noise floor, and ViSQOL judges "
                        "codecs on them differently than on dry renders")
    p.add_argument("--stems", action="store_true",
                   help="also render each part alone into OUT/stems/<key>/NN.flac (listed in the "
                        "index's 'stems' column); the mix is their sum. For the separation "
                        "families of 'deepaq-prep build' (costs one synth run per part)")
    p.add_argument("--list", action="store_true", help="list the composers and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        counts: dict[str, int] = {}
        for c in list_candidates():
            counts[c.composer_id] = counts.get(c.composer_id, 0) + 1
        for cid, name in COMPOSERS.items():
            print(f"{cid:<16} {counts.get(cid, 0):>5} works  {name}")
        return 0
    if not args.out:
        build_parser().error("the output folder is required")
    try:
        index = render_corpus(args.out, n_pieces=args.pieces, max_seconds=args.max_seconds,
                              seed=args.seed, jobs=args.jobs, composers=args.composers,
                              works=args.works, ensembles=args.ensembles,
                              progress=not args.quiet, target_rms_dbfs=args.target_rms_dbfs,
                              timeout_s=args.timeout, subtype=f"PCM_{args.bit_depth}",
                              room_rt60_s=args.room_rt60, room_wet=args.room_wet,
                              noise_floor_db=args.noise_floor_db, stems=args.stems)
    except (RenderSetupError, ImportError, ValueError) as exc:
        print(f"deepaq-prep render: {exc}", file=sys.stderr)
        return 2
    from deepaq.records import read_jsonl

    rows = read_jsonl(index)
    total = sum(float(r["duration"]) for r in rows)
    print(f"wrote {index}: {len(rows)} pieces, {total / 60:.1f} min of audio")
    wanted = min(args.pieces, len(args.works)) if args.works else args.pieces
    return 0 if len(rows) >= wanted else 1


__all__ = ["COMPOSERS", "ENSEMBLES", "Candidate", "RenderSettings", "RenderSetupError",
           "check_setup", "choose_instrumentation", "find_work", "list_candidates", "main",
           "plan_order", "render_corpus", "render_piece"]
