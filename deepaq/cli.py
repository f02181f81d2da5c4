"""The ``deepaq`` command: a thin dispatcher to one module per verb, imported only when used.

Keeping the verbs in separate modules means ``deepaq --help`` and ``deepaq score`` never import
Lightning or the training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in ``--help``: argparse's ``(default: X)``, except where the help
    text already says what the default is (a default of None means "see the help text") and for
    on/off flags (off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.nargs == 0
                or any(action.default is v for v in (None, argparse.SUPPRESS))):
            return text
        return super()._get_help_string(action)

#: verb -> ("module:function", one-line help). Each function takes argv and returns an exit code.
VERBS: dict[str, tuple[str, str]] = {
    "score": ("deepaq.score_cli:main", "score reference/degraded pairs (one pair or a batch file)"),
    "embed": ("deepaq.embed_cli:main", "write quality embeddings for a folder or manifest"),
    "eval": ("deepaq.eval_cli:main", "correlate metrics with listening-test scores"),
    "fit": ("deepaq.training.cli:main", "train a model from a YAML recipe (LightningCLI)"),
    "validate": ("deepaq.training.cli:main", "validate a model on the val split"),
    "test": ("deepaq.training.cli:main", "test a model on the test split"),
    "export": ("deepaq.training.export:main", "merge LoRA into the backbone for deployment"),
    "convert-mert": ("deepaq.backbones.convert_mert:main",
                     "convert a MERT hub snapshot into a local HubertModel folder"),
}
_PASS_VERB = {"fit", "validate", "test"}
#: verb -> the optional extra its dependencies come from (the others need only the core install)
VERB_EXTRA = {"fit": "train", "validate": "train", "test": "train", "export": "train",
              "convert-mert": "train", "eval": "eval"}


def _usage() -> str:
    lines = ["usage: deepaq VERB [args...]", "",
             "Learned perceptual audio-quality metrics (DeePAQ).", "", "verbs:"]
    lines += [f"  {verb:<13} {help_}" for verb, (_, help_) in VERBS.items()]
    lines += ["", "Run 'deepaq VERB --help' for a verb's options. Corpus generation: deepaq-prep."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from deepaq import __version__

        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"deepaq: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = VERBS[verb][0].split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        code = func([verb, *rest] if verb in _PASS_VERB else rest)
    except ImportError as exc:
        from deepaq.extras import install_hint

        hint = install_hint(exc, VERB_EXTRA.get(verb))
        if hint is None:
            raise
        print(f"deepaq {verb}: {hint}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
