"""``deepaq fit|validate|test -c configs/train/RECIPE.yaml [--section.key value ...]``.

A LightningCLI over :class:`DeePAQModule` and :class:`CorpusDataModule`: the recipe YAML maps
one-to-one onto their constructor arguments (``model:``, ``data:``) and the Trainer's
(``trainer:``); any key can be overridden on the command line (``--trainer.max_epochs 5``,
``--data.manifest corpus/manifest.jsonl``). The resolved config is written next to the run's
checkpoints (``<log_dir>/config.yaml``) and, at the end of ``fit``, as ``train_config.yaml`` into
the exported model folder.

Multi-GPU / multi-node: ``--trainer.devices 4 --trainer.num_nodes 2 --trainer.strategy ddp``
(Lightning's DDP). ``use_distributed_sampler`` defaults to False because the excerpt batch
sampler shards itself per rank. Mixed precision: ``--trainer.precision bf16-mixed`` on GPU.
"""

from __future__ import annotations

import sys

#: Trainer settings every deepaq run starts from (a recipe or the command line overrides them).
TRAINER_DEFAULTS = {
    "use_distributed_sampler": False,
    "log_every_n_steps": 10,
}


def _save_config_callback():
    from lightning.pytorch.cli import SaveConfigCallback

    class SaveResolvedConfig(SaveConfigCallback):
        """Lightning's config saver that also hands the resolved YAML to the module for export."""

        def setup(self, trainer, pl_module, stage: str) -> None:
            if hasattr(pl_module, "resolved_config"):
                pl_module.resolved_config = self.parser.dump(self.config, skip_none=False)
            super().setup(trainer, pl_module, stage)

    return SaveResolvedConfig


def build_cli(argv: list[str], run: bool = True):
    """The LightningCLI object (``run=False``: parse and instantiate only, for tests/tools)."""
    from lightning.pytorch.cli import LightningCLI

    from deepaq.training.data import CorpusDataModule
    from deepaq.training.module import DeePAQModule

    return LightningCLI(
        DeePAQModule, CorpusDataModule, args=argv, run=run,
        save_config_callback=_save_config_callback(),
        save_config_kwargs={"overwrite": True},
        trainer_defaults=dict(TRAINER_DEFAULTS),
        seed_everything_default=0,
        parser_kwargs={"prog": "deepaq", "description": "Train and evaluate deepaq models.",
                       **{verb: {"default_env": False} for verb in ("fit", "validate", "test")}},
        auto_configure_optimizers=False,
    )


def main(argv: list[str] | None = None) -> int:
    """``argv = [verb, *args]``; returns an exit code (help and bad arguments included)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("fit", "validate", "test"):
        print("usage: deepaq {fit,validate,test} -c configs/train/RECIPE.yaml [--key value ...]",
              file=sys.stderr)
        return 2
    saved_argv = sys.argv
    sys.argv = sys.argv[:1]  # LightningCLI warns when both args= and sys.argv carry arguments
    try:
        build_cli(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad argument (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    finally:
        sys.argv = saved_argv
    return 0
