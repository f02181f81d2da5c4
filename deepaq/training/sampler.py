"""Batches that hold several excerpts with several of their conditions each.

Why: Rank-N-Contrast ranks items by label inside a batch. With purely random batches most pairs
are different pieces, and the ranking learns "which piece" rather than "how degraded". Grouping
``conditions_per_excerpt`` conditions of the same excerpt (its clean version included) makes the
loss compare codec conditions of one piece *and* across pieces.

DDP: the sampler shards itself (``num_replicas``/``rank``), so Lightning must be told not to wrap it
(``Trainer(use_distributed_sampler=False)``, the default set by ``deepaq fit``). Every rank gets the
same number of batches (the surplus is dropped), so no rank waits forever in a collective.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class ExcerptBatchSampler:
    """Yields lists of dataset indices; a new seeded shuffle every epoch (call :meth:`set_epoch`).

    Each batch holds ``excerpts_per_batch`` groups; a group is ``conditions_per_excerpt`` items of
    one excerpt, its clean item first when ``include_clean``. With ``cover_all_conditions`` every
    condition of every excerpt appears at least once per epoch (an excerpt with many conditions
    gives several groups, the last one topped up with random other conditions so all groups have
    the same size); otherwise each excerpt gives one random group per epoch. ``with_epoch`` yields
    ``(index, epoch)`` pairs, so a dataset in a loader worker crops each excerpt once per epoch.
    """

    def __init__(self, excerpt_ids: Sequence[str], is_clean: Sequence[bool],
                 excerpts_per_batch: int = 8, conditions_per_excerpt: int = 4,
                 include_clean: bool = True, cover_all_conditions: bool = True,
                 shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, with_epoch: bool = False):
        if len(excerpt_ids) != len(is_clean):
            raise ValueError("excerpt_ids and is_clean must have the same length")
        if excerpts_per_batch < 1 or conditions_per_excerpt < 1:
            raise ValueError("excerpts_per_batch and conditions_per_excerpt must be >= 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.excerpts_per_batch = int(excerpts_per_batch)
        self.conditions_per_excerpt = int(conditions_per_excerpt)
        self.include_clean = include_clean
        self.cover_all_conditions = cover_all_conditions
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.with_epoch = bool(with_epoch)
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None
        # excerpt -> (clean indices, other indices), in first-appearance order (deterministic).
        self._groups: dict[str, tuple[list[int], list[int]]] = {}
        for i, (ex, clean) in enumerate(zip(excerpt_ids, is_clean)):
            clean_idx, other_idx = self._groups.setdefault(str(ex), ([], []))
            (clean_idx if clean else other_idx).append(i)
        self._excerpts = list(self._groups)
        if not self._excerpts:
            raise ValueError("no items to sample from")

    def set_epoch(self, epoch: int) -> None:
        """A different (but reproducible) shuffle each epoch, identical on every rank."""
        self.epoch = int(epoch)

    def _excerpt_groups(self, ex: str, rng: np.random.Generator) -> list[list[int]]:
        clean, other = self._groups[ex]
        k = self.conditions_per_excerpt
        head = [int(rng.choice(clean))] if (self.include_clean and clean) else []
        pool = list(other) + ([] if head else list(clean))
        if self.shuffle:
            pool = [pool[j] for j in rng.permutation(len(pool))]
        per = k - len(head)
        if per <= 0 or not pool:
            return [head[:k]] if head else []
        chunks = [pool[j:j + per] for j in range(0, len(pool), per)]
        if not self.cover_all_conditions:
            chunks = chunks[:1]
        last = chunks[-1]
        if len(last) < per and len(pool) > len(last):
            # Top up the short last group with other conditions of the same excerpt.
            spare = [p for p in pool if p not in last]
            take = min(per - len(last), len(spare))
            last.extend(int(s) for s in rng.choice(spare, size=take, replace=False))
        return [head + chunk for chunk in chunks]

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = list(self._excerpts)
        if self.shuffle:
            order = [order[j] for j in rng.permutation(len(order))]
        per_excerpt = [self._excerpt_groups(ex, rng) for ex in order]
        # Round-robin over excerpts: consecutive groups (hence one batch) come from different
        # excerpts except where one round ends and the next begins.
        groups = [g for rnd in range(max(map(len, per_excerpt), default=0))
                  for ex_groups in per_excerpt if rnd < len(ex_groups)
                  for g in [ex_groups[rnd]]]
        e = self.excerpts_per_batch
        batches = [[i for g in groups[j:j + e] for i in g] for j in range(0, len(groups), e)]
        if self.drop_last and batches and len(groups) % e:
            batches.pop()
        return batches

    def _my_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self._all_batches()
            per_rank = len(batches) // self.num_replicas
            self._cache = (self.epoch, batches[self.rank::self.num_replicas][:per_rank])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int]]]:
        if not self.with_epoch:
            yield from self._my_batches()
            return
        for batch in self._my_batches():
            yield [(i, self.epoch) for i in batch]

    def __len__(self) -> int:
        return len(self._my_batches())
