"""Distortion families in a corpus: the grid's ``degradations:`` section -> manifest rows.

Why: ``deepaq-prep build`` makes codec ladders; the same excerpts also get a ladder of every
family named in the grid (noise by SNR, band limits, separation artefacts, ... and the
invariances), so that one corpus, one manifest schema and one resume/shard machinery carry all
the weak labels. The section maps a registered degradation to its levels and options::

    degradations:
      noise_pink: {levels: [0, 10, 20, 30, 40]}
      artefacts: {levels: [0.2, 0.4, 0.6, 0.8, 1.0], masks: [noisy, smoothed, binary, suppress]}
      gain: {levels: [-10, -6, -3, 3]}

``masks`` (separation families) lists the mask corruptions; each excerpt gets one of them (seeded),
so that an excerpt's ladder is one mask type. Other keys are the family's options
(``input_sir_db``, ``max_floor``). Separation families need stems: list inputs with a ``stems``
column (as ``deepaq-prep render --stems`` writes); excerpts without stems skip them.
"""

from __future__ import annotations

import inspect
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.degradations import get_degradation, level_tag, power
from data_prep.separation import MASK_TYPES

HEADROOM = 1.0  # FLAC stores [-1, 1]: outputs are clipped there, and measured as stored


@dataclass(frozen=True)
class FamilySpec:
    """One family of the grid with its ladder of levels."""

    name: str
    levels: tuple[float, ...]
    masks: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain YAML-safe data (saved in ``corpus.yaml``)."""
        return {"name": self.name, "levels": list(self.levels), "masks": list(self.masks),
                "options": dict(self.options)}


def condition_for(name: str, level: float) -> str:
    """``noise_pink_20``, ``gain_m6``, ``interference_and_artefacts_0p4``."""
    return f"{name.replace('+', '_and_')}_{level_tag(level)}"


def load_families(grid: str | os.PathLike | dict) -> list[FamilySpec]:
    """The ``degradations:`` section of a grid (YAML path or dict); [] when it has none."""
    if not isinstance(grid, dict):
        from data_prep.codecs import read_grid_file

        grid = read_grid_file(grid)
    section = grid.get("degradations") or {}
    if not isinstance(section, dict):
        raise ValueError("grid 'degradations' must map family names to {levels: [...]}")  # noqa: TRY004
    specs = []
    for name, entry in section.items():
        deg = get_degradation(str(name))
        entry = dict(entry or {})
        levels = entry.pop("levels", None)
        if not levels or not all(isinstance(v, (int, float)) for v in levels):
            raise ValueError(f"grid degradations.{name}: needs 'levels', a list of numbers")
        masks = tuple(entry.pop("masks", ()) or ())
        if masks and "mask" not in inspect.signature(deg.fn).parameters:
            raise ValueError(f"grid degradations.{name}: 'masks' is for the artefacts families")
        bad = [m for m in masks if m not in MASK_TYPES]
        if bad:
            raise ValueError(f"grid degradations.{name}: unknown masks {bad}; choose from "
                             f"{', '.join(MASK_TYPES)}")
        if entry:
            allowed = set(inspect.signature(deg.fn).parameters) - {
                "target", "others", "audio", "sr", "level", "rng", "limit", "mask"}
            unknown = sorted(set(entry) - allowed)
            if unknown:
                raise ValueError(f"grid degradations.{name}: unknown options {unknown}"
                                 + (f"; it takes {sorted(allowed)}" if allowed else ""))
        specs.append(FamilySpec(str(name), tuple(float(v) for v in levels), masks, entry))
    return specs


def _seed(*parts) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def choose_target(stems: list[np.ndarray], excerpt_id: str, seed: int,
                  threshold_dbfs: float = -50.0) -> int | None:
    """A seeded choice of the target stem among those audible in the excerpt (None: fewer than
    two audible stems, so no separation)."""
    audible = [i for i, s in enumerate(stems)
               if power(s) > 0 and 10 * math.log10(power(s)) >= threshold_dbfs]
    if len(audible) < 2:
        return None
    return audible[_seed("target", seed, excerpt_id) % len(audible)]


def family_items(clean: np.ndarray, sr: int, families: list[FamilySpec], excerpt_id: str,
                 seed: int, stems: list[np.ndarray] | None = None,
                 stem_names: list[str] | None = None) -> list[dict]:
    """Every family's ladder for one excerpt: dicts with ``condition``, ``audio`` (clipped to
    the FLAC range), the row fields (family, level, ..., measured quantities), ``target``
    (the reference audio when it is not ``clean``: a separation's target stem) and, for items
    that could not be made, ``error``."""
    target_index = choose_target(stems, excerpt_id, seed) if stems else None
    items: list[dict] = []
    for spec in families:
        deg = get_degradation(spec.name)
        extra: dict = {}
        options = dict(spec.options)
        if deg.needs_others:
            if target_index is None:
                continue  # no stems (or one audible stem): no separation for this excerpt
            target = stems[target_index]
            extra["others"] = [s for i, s in enumerate(stems) if i != target_index]
            if spec.masks:
                options["mask"] = spec.masks[_seed("mask", seed, excerpt_id) % len(spec.masks)]
            source = target
        else:
            source = clean
        for k, level in enumerate(spec.levels):
            cond = condition_for(spec.name, level)
            item = {"condition": cond, "family": spec.name, "level": level,
                    "level_unit": deg.unit, "level_higher_is_better": deg.higher_is_better,
                    "invariance": deg.is_invariance,
                    "target": source if deg.needs_others else None,
                    "target_stem": (stem_names[target_index] if deg.needs_others and stem_names
                                    else None)}
            rng = np.random.default_rng([seed, _seed(excerpt_id), _seed(spec.name), k])
            try:
                out = deg.apply(source, sr, level, rng, limit=HEADROOM, **extra, **options)
            except ValueError as exc:
                items.append({**item, "error": str(exc)})
                continue
            if deg.is_invariance and out.clipped:
                # a clipped "transparent" change is not transparent: leave it out, say why
                items.append({**item, "omitted": f"{out.clipped} samples would clip at "
                                                 f"{spec.name} {level:g} {deg.unit}"})
                continue
            items.append({**item, "audio": out.audio, **out.measures})
    return items


def load_stems(paths: list[str], start: float, seconds: float, n: int, sr: int,
               prepare: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """The excerpt ``[start, start + seconds)`` of each stem at ``sr``, ``prepare``'d (the
    corpus's channel policy) and cut or padded to ``n`` samples, like the mix's excerpt."""
    from deepaq.alignment import fit_length
    from deepaq.audio import load_audio

    out = []
    for p in paths:
        y = prepare(load_audio(p, sample_rate=sr, start=start, end=start + seconds))
        y = fit_length(y, n)
        out.append(np.ascontiguousarray(y, dtype=np.float32))
    return out


def family_rows(items: list[dict], out_dir: str | os.PathLike, folder: str | os.PathLike,
                common: dict, label: Callable[[np.ndarray, np.ndarray], float | None],
                clean: np.ndarray, sr: int) -> tuple[list[dict], list[dict]]:
    """Write the items as ``folder/<condition>.flac`` (and a separation's target stem as
    ``folder/target.flac``) under ``out_dir`` and make their manifest rows; ``common`` holds the
    excerpt's fields (its ``reference`` is the clean mix), ``label(reference audio, audio)`` the
    ViSQOL label or None. Returns (rows, errors as ``{"condition", "reason"}``)."""
    from deepaq.audio import write_audio
    from deepaq.manifest import MEASURE_FIELDS, make_row

    out, folder = Path(out_dir), Path(folder)
    rows, errors = [], []
    targets: dict[int, str] = {}
    for it in items:
        if "error" in it or "omitted" in it:
            # omitted: left out on purpose, the same on every run (not a failure to retry)
            errors.append({"condition": it["condition"], "reason": it.get("error", it.get("omitted")),
                           "omitted": "omitted" in it})
            continue
        ref_audio, ref = clean, common["reference"]
        if it["target"] is not None:
            if id(it["target"]) not in targets:
                targets[id(it["target"])] = str(folder / "target.flac")
                write_audio(out / targets[id(it["target"])], it["target"], sr)
            ref_audio, ref = it["target"], targets[id(it["target"])]
        rel = str(folder / f"{it['condition']}.flac")
        write_audio(out / rel, it["audio"], sr)
        rows.append(make_row(**{
            **common, "key": f"{common['excerpt_id']}__{it['condition']}",
            "condition": it["condition"], "codec": None, "encoder": None,
            "bitrate_requested_kbps": None, "bitrate_measured_kbps": None,
            "bitrate_label": None, "coded_sample_rate": sr, "delay_removed_samples": 0,
            "alignment_lag": 0, "path": rel, "reference": ref,
            "visqol": label(ref_audio, it["audio"]), "family": it["family"],
            "level": it["level"], "level_unit": it["level_unit"],
            "level_higher_is_better": it["level_higher_is_better"],
            "invariance": it["invariance"], "mask_type": it.get("mask_type"),
            "target_stem": it["target_stem"], **{m: it.get(m) for m in MEASURE_FIELDS}}))
    return rows, errors


__all__ = ["FamilySpec", "choose_target", "condition_for", "family_items", "family_rows",
           "load_families", "load_stems"]
