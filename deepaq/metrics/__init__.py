"""Metric registry: every quality metric (DeePAQ, ViSQOL, log-mel L1, PEAQ, 2f, HAAQI) behind one API.

Why a registry: ``deepaq eval --metrics a,b,c`` and ``deepaq score --metric NAME`` put any metric side
by side without knowing its code. Built-in entries are ``"module:attr"`` strings imported only when
asked for, so a metric whose module or optional dependency is missing fails alone, with a message.

A metric is a small class with ``info: MetricInfo`` and ``score(ref, deg, sr) -> float | dict``
(``ref``/``deg`` are ``(channels, samples)`` float32 arrays at ``sr``; a dict keeps its main value
under ``"score"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Metric", "MetricInfo", "available_metrics", "get_metric", "main_value",
           "parse_metric_spec", "register"]


@dataclass
class MetricInfo:
    """What a caller needs to know before using a metric's numbers."""

    name: str
    needs_reference: bool = True
    higher_is_better: bool = True
    sample_rate: int | None = None  # native rate; None: any rate is fine
    extra: str | None = None  # optional dependency group: pip install 'deepaq[EXTRA]'
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Metric:
    """Base class; subclasses set ``info`` and implement ``score``."""

    info: MetricInfo

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> float | dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.name}>"


# name -> factory(**kwargs) -> Metric, registered at run time with @register(name)
_FACTORIES: dict[str, Callable[..., Metric]] = {}
# name -> ("module:attr", keyword that a "name:VALUE" spec fills, or None); imported on demand
_BUILTINS: dict[str, tuple[str, str | None]] = {
    "deepaq": ("deepaq.metrics.deepaq_metric:DeepaqMetric", "checkpoint"),
    "visqol": ("deepaq.metrics.visqol:VisqolMetric", "mode"),
    "logmel_l1": ("deepaq.metrics.logmel:LogMelL1Metric", None),
    "peaq_odg": ("deepaq.metrics.peaq:PEAQMetric", None),
    "2f": ("deepaq.metrics.twof:TwoFMetric", None),
    "haaqi": ("deepaq.metrics.haaqi:HAAQIMetric", None),
    "zimtohrli": ("deepaq.metrics.zimtohrli:ZimtohrliMetric", None),
    "cdpam": ("deepaq.metrics.cdpam:CdpamMetric", None),
    "lsd": ("deepaq.metrics.lsd:LsdMetric", None),
    "snr": ("deepaq.metrics.waveform:SnrMetric", None),
    "si_sdr": ("deepaq.metrics.waveform:SiSdrMetric", None),
}


def register(name: str) -> Callable[[Callable[..., Metric]], Callable[..., Metric]]:
    """Decorator: ``@register("my_metric") class MyMetric(Metric): ...`` (a class or a factory)."""

    def deco(factory: Callable[..., Metric]) -> Callable[..., Metric]:
        _FACTORIES[name] = factory
        return factory

    return deco


def available_metrics() -> list[str]:
    """Every known name, built-in or registered (a listed metric may still need an extra)."""
    return sorted(set(_FACTORIES) | set(_BUILTINS))


def parse_metric_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"deepaq:ckpt/dir"`` -> ``("deepaq", {"checkpoint": "ckpt/dir"})``; ``"visqol:speech"`` too."""
    if spec in _FACTORIES or spec in _BUILTINS or ":" not in spec:
        return spec, {}
    name, value = spec.split(":", 1)
    keyword = _BUILTINS.get(name, (None, None))[1]
    if keyword is None:
        raise ValueError(f"metric {name!r} takes no ':VALUE' argument (got {spec!r})")
    return name, {keyword: value}


def get_metric(name: str, **kwargs: Any) -> Metric:
    """Instantiate a metric by name (or ``name:VALUE`` spec); kwargs go to its constructor."""
    name, spec_kwargs = parse_metric_spec(name)
    kwargs = {**spec_kwargs, **kwargs}
    if name in _FACTORIES:
        return _FACTORIES[name](**kwargs)
    if name not in _BUILTINS:
        raise KeyError(f"unknown metric {name!r}; available: {', '.join(available_metrics())}")
    target = _BUILTINS[name][0]
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise ImportError(f"metric {name!r} is not available in this install "
                              f"(module {module_name} not found)") from exc
        raise
    factory = getattr(module, attr, None)
    if factory is None:
        raise ImportError(f"metric {name!r}: {module_name} has no {attr}")
    return factory(**kwargs)


def main_value(result: float | dict) -> float:
    """The headline number of a metric result (a dict keeps it under ``"score"``)."""
    if isinstance(result, dict):
        return float(result["score"])
    return float(result)
