"""Training side of deepaq: corpus data, batch sampler, LightningModule, CLI and export.

Nothing is imported here on purpose: scoring must never pull Lightning in, and ``deepaq --help``
must stay fast. Import the submodules you need (``deepaq.training.module`` etc.).
"""
