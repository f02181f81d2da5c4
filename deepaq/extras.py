"""Optional dependencies: which extra installs a missing module, said in one line.

Scoring needs only the core dependencies; training, corpus preparation and evaluation pull in
heavier libraries, installed with ``pip install 'deepaq[train]'``, ``[prep]``, ``[eval]`` or
``[all]``. A verb that meets a missing one answers with the command that installs it.
"""

from __future__ import annotations

#: extra -> the top-level modules it installs (mirrors pyproject.toml's optional dependencies).
MODULES_OF_EXTRA: dict[str, frozenset[str]] = {
    "train": frozenset({"lightning", "jsonargparse", "peft", "transformers", "huggingface_hub",
                        "scipy", "sklearn"}),
    "prep": frozenset({"visqol", "numba", "av", "scipy"}),
    "eval": frozenset({"matplotlib", "sklearn", "scipy"}),
    "demo": frozenset({"music21"}),
}

#: top-level module -> the extra that installs it, derived from :data:`MODULES_OF_EXTRA` so the
#: two cannot drift. ``scipy`` and ``sklearn`` are in several: the last extra listed that holds
#: one wins (``eval``), and the verb's own extra is named first when it holds the module, see
#: :func:`install_hint`.
EXTRA_OF_MODULE: dict[str, str] = {
    module: extra for extra, modules in MODULES_OF_EXTRA.items() for module in sorted(modules)}


def install_hint(exc: ImportError, extra: str | None = None) -> str | None:
    """``"needs 'lightning': pip install 'deepaq[train]'"`` for a missing optional module, or None
    when ``exc`` is about anything else (a real bug, which must not be hidden)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in EXTRA_OF_MODULE:
        return None
    if extra not in MODULES_OF_EXTRA or name not in MODULES_OF_EXTRA[extra]:
        extra = EXTRA_OF_MODULE[name]
    return f"needs the optional package {name!r}; install it with: pip install 'deepaq[{extra}]'"


def require(*modules: str) -> None:
    """Raise ModuleNotFoundError now for the first of ``modules`` that is not installed, so a
    batch verb stops at start-up with its install hint instead of failing every item."""
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
