"""Corpus manifest -> tensors: the dataset, its collate function and the LightningDataModule.

The manifest (JSONL, schema in :mod:`deepaq.manifest`) is written by ``deepaq-prep``; audio paths
in it are relative to the manifest's folder. Items are decoded at the model's input rate, mono, and cropped
with the *same* offset as their reference, because corpus items are delay-compensated and a
full-reference distance needs both sides aligned. A random crop is drawn once per excerpt and
epoch, so every condition of an excerpt in a batch (its clean item included, the in-batch reference
of reference-anchored losses) covers the same window.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from deepaq.manifest import TRAINING_COLUMNS, is_clean, read_manifest, read_manifest_config
from deepaq.records import parse_float


class CorpusDataset(torch.utils.data.Dataset):
    """One corpus item with its reference and labels, decoded on demand (``__getitem__``).

    ``crop_seconds``: cut a window of that length (random when ``random_crop``, else centred) at the
    same place in item and reference; ``None`` keeps whole excerpts. The random offset is drawn
    from (``crop_seed``, epoch, excerpt id), so all conditions of an excerpt share it within an
    epoch (:meth:`set_epoch`; an index ``(i, epoch)`` carries the epoch into loader workers).
    ``extra_columns`` are passed through to the batch (numbers as tensors, anything else as lists),
    e.g. a domain label.
    """

    def __init__(self, manifest: str | os.PathLike, split: str | Sequence[str] | None = "train",
                 sample_rate: int = 24000, crop_seconds: float | None = None,
                 random_crop: bool = True, load_reference: bool = True,
                 extra_columns: Sequence[str] = (), rows: list[dict] | None = None,
                 crop_seed: int = 0):
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        self.rows = rows if rows is not None else read_manifest(self.manifest, split, required=TRAINING_COLUMNS)
        if not self.rows:
            raise ValueError(f"{self.manifest}: no rows in split {split!r}")
        self.sample_rate = int(sample_rate)
        self.crop_seconds = crop_seconds
        self.random_crop = random_crop
        self.load_reference = load_reference
        self.extra_columns = list(extra_columns)
        self.excerpt_ids = [str(r["excerpt_id"]) for r in self.rows]
        self.excerpt_index = {ex: i for i, ex in enumerate(sorted(set(self.excerpt_ids)))}
        self.clean = [is_clean(r) for r in self.rows]
        self.crop_seed = int(crop_seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """New crop offsets for a new epoch (the batch sampler passes its epoch with each index)."""
        self.epoch = int(epoch)

    def _crop_fraction(self, row: dict, epoch: int) -> float:
        """Where the crop starts, as a fraction of the room left: one draw per excerpt and epoch,
        so an excerpt's conditions and their reference are cut at the same place."""
        if not self.random_crop:
            return 0.5
        excerpt = zlib.crc32(str(row["excerpt_id"]).encode("utf-8"))
        return float(np.random.default_rng([self.crop_seed, int(epoch), excerpt]).random())

    def crop_window(self, index: int, epoch: int | None = None) -> tuple[float | None, float | None]:
        """Crop window in seconds, from the manifest's length (FLAC seeks, so only it is decoded);
        ``(None, None)`` for whole excerpts or rows without a length."""
        row = self.rows[index]
        if not self.crop_seconds:
            return None, None
        rate = float(row.get("sample_rate") or 0)
        n = int(row.get("num_samples") or 0)
        duration = n / rate if rate and n else None
        if duration is None or duration <= self.crop_seconds:
            return None, None
        room = duration - self.crop_seconds
        start = self._crop_fraction(row, self.epoch if epoch is None else epoch) * room
        return start, start + self.crop_seconds

    def _load(self, rel: str, start: float | None, end: float | None) -> torch.Tensor:
        from deepaq.audio import load_audio

        x = load_audio(self.root / rel, sample_rate=self.sample_rate, channels="mono",
                       start=start, end=end)
        return torch.from_numpy(x[0].copy())

    def _crop_loaded(self, fraction: float, *waves: torch.Tensor) -> list[torch.Tensor]:
        """Crop after decoding when the manifest did not give a length to crop by."""
        n = min(w.shape[-1] for w in waves)
        size = round((self.crop_seconds or 0) * self.sample_rate)
        if not size or n <= size:
            return list(waves)
        room = n - size
        start = min(room, int(fraction * (room + 1))) if self.random_crop else room // 2
        return [w[start:start + size] for w in waves]

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = index if isinstance(index, tuple) else (index, self.epoch)
        row = self.rows[index]
        start, end = self.crop_window(index, epoch)
        item = self._load(row["path"], start, end)
        waves = [item]
        if self.load_reference:
            waves.append(self._load(row["reference"], start, end))
        if start is None and self.crop_seconds:
            waves = self._crop_loaded(self._crop_fraction(row, epoch), *waves)
        out: dict[str, Any] = {
            "index": index,
            "key": str(row["key"]),
            "item": waves[0],
            "visqol": parse_float(row["visqol"]),
            "bitrate": parse_float(row["bitrate_label"]),
            "excerpt": self.excerpt_index[str(row["excerpt_id"])],
            "coded": not self.clean[index],
        }
        if self.load_reference:
            out["reference"] = waves[1]
        for col in self.extra_columns:
            out[col] = row.get(col)
        return out


def warn_total_bitrate_labels(manifest: str | os.PathLike, rows: list[dict]) -> bool:
    """Warn (and return True) when mono and stereo coded items share a corpus whose
    ``bitrate_label`` is not known to be per channel (built before it was): the bitrate term
    would then rank a stereo item level with a mono one at the same total kbps."""
    channels = {r.get("channels") for r in rows if r.get("codec")}
    if len(channels) < 2:
        return False
    side = read_manifest_config(manifest) or {}
    if (side.get("config") or {}).get("bitrate_label") == "measured kbps per channel":
        return False
    import warnings

    warnings.warn(f"{manifest}: mono and stereo items, and bitrate_label is the total kbps (no "
                  "manifest.config.json saying it is per channel): rebuild the corpus with this "
                  "deepaq-prep, or the bitrate term ranks by total bits", stacklevel=2)
    return True


def pad_waves(waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waves with zeros to ``[B, T]``; the lengths let the model mask the padding."""
    lengths = torch.tensor([w.shape[-1] for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()), dtype=waves[0].dtype)
    for i, w in enumerate(waves):
        out[i, : w.shape[-1]] = w
    return out, lengths


def collate_items(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack dataset samples: padded waves + lengths, label tensors, keys and extra columns."""
    batch: dict[str, Any] = {}
    batch["item"], batch["item_lengths"] = pad_waves([s["item"] for s in samples])
    if "reference" in samples[0]:
        batch["reference"], batch["reference_lengths"] = pad_waves(
            [s["reference"] for s in samples])
    batch["visqol"] = torch.tensor([s["visqol"] for s in samples], dtype=torch.float32)
    batch["bitrate"] = torch.tensor([s["bitrate"] for s in samples], dtype=torch.float32)
    batch["excerpt"] = torch.tensor([s["excerpt"] for s in samples], dtype=torch.long)
    batch["coded"] = torch.tensor([s["coded"] for s in samples], dtype=torch.bool)
    batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
    batch["key"] = [s["key"] for s in samples]
    fixed = {"item", "reference", "visqol", "bitrate", "excerpt", "coded", "index", "key"}
    for col in samples[0]:
        if col in fixed:
            continue
        values = [s[col] for s in samples]
        if all(isinstance(v, (int, float, bool)) and not isinstance(v, str) for v in values):
            batch[col] = torch.tensor(values)
        else:
            batch[col] = values
    return batch


class CorpusDataModule(pl.LightningDataModule):
    """Train/val/test loaders over one corpus manifest (its ``split`` column picks the rows).

    Training batches come from :class:`~deepaq.training.sampler.ExcerptBatchSampler`:
    ``batch_size // conditions_per_excerpt`` excerpts x ``conditions_per_excerpt`` conditions.
    The sampler shards itself across DDP ranks, so the Trainer runs with
    ``use_distributed_sampler=False``; val/test loaders are sharded here as well (rank::world) and
    the module gathers their outputs before computing correlations. Training batches carry no
    reference audio (the clean item of each excerpt is in the batch) unless ``train_reference``,
    for losses anchored on the reference.
    """

    def __init__(self, manifest: str, batch_size: int = 32, conditions_per_excerpt: int = 4,
                 include_clean: bool = True, cover_all_conditions: bool = True,
                 sample_rate: int = 24000, crop_seconds: float | None = None,
                 val_crop_seconds: float | None = None, val_batch_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False, drop_last: bool = False,
                 seed: int | None = None, train_split: str = "train", val_split: str = "val",
                 test_split: str = "test", extra_columns: list[str] | None = None,
                 train_reference: bool = False):
        super().__init__()
        if conditions_per_excerpt < 1 or batch_size < conditions_per_excerpt:
            raise ValueError("need 1 <= conditions_per_excerpt <= batch_size")
        self.manifest = manifest
        self.batch_size = batch_size
        self.conditions_per_excerpt = conditions_per_excerpt
        self.include_clean = include_clean
        self.cover_all_conditions = cover_all_conditions
        self.sample_rate = sample_rate
        self.crop_seconds = crop_seconds
        self.val_crop_seconds = val_crop_seconds
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.seed = seed
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.extra_columns = list(extra_columns or [])
        self.train_reference = train_reference
        self.datasets: dict[str, CorpusDataset] = {}
        self._rows: list[dict] | None = None

    def _dataset(self, which: str) -> CorpusDataset:
        if which not in self.datasets:
            if self._rows is None:
                self._rows = read_manifest(self.manifest, required=TRAINING_COLUMNS)
                warn_total_bitrate_labels(self.manifest, self._rows)
            split = self.splits[which]
            rows = [r for r in self._rows if r.get("split") == split]
            if not rows:
                raise ValueError(f"{self.manifest}: no rows with split {split!r}")
            train = which == "train"
            self.datasets[which] = CorpusDataset(
                self.manifest, split, self.sample_rate,
                crop_seconds=self.crop_seconds if train else self.val_crop_seconds,
                random_crop=train, load_reference=self.train_reference or not train,
                extra_columns=self.extra_columns, rows=rows, crop_seed=self._seed())
        return self.datasets[which]

    def _seed(self) -> int:
        return int(self.seed if self.seed is not None else torch.initial_seed() % 2**32)

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",)}.get(stage or "fit", ("train", "val"))
        for which in needed:
            self._dataset(which)

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, dataset, **kwargs) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, collate_fn=collate_items, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        from deepaq.training.sampler import ExcerptBatchSampler

        ds = self._dataset("train")
        rank, world = self._rank_world()
        seed = self._seed()
        sampler = ExcerptBatchSampler(
            ds.excerpt_ids, ds.clean,
            excerpts_per_batch=max(1, self.batch_size // self.conditions_per_excerpt),
            conditions_per_excerpt=self.conditions_per_excerpt,
            include_clean=self.include_clean, cover_all_conditions=self.cover_all_conditions,
            drop_last=self.drop_last, seed=int(seed), num_replicas=world, rank=rank,
            with_epoch=True)
        return self._loader(ds, batch_sampler=sampler)

    def _eval_loader(self, which: str) -> torch.utils.data.DataLoader:
        ds = self._dataset(which)
        rank, world = self._rank_world()
        if world > 1:
            ds = torch.utils.data.Subset(ds, list(range(rank, len(ds), world)))
        return self._loader(ds, batch_size=self.val_batch_size, shuffle=False)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._eval_loader("test")
