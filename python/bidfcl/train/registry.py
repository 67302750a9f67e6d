"""The training methods: each trainer registers itself here, with its experiment presets.

    @register_method("dfcl", decision_loss=True, doc="decision-focused learning on RCT rows")
    class DfclTrainer(Trainer): ...

Config validation (``train.method``), :func:`bidfcl.train.make_trainer`, the experiment presets
and the error messages read :data:`METHODS`; decision losses have their own registry,
:data:`bidfcl.objectives.DECISION_LOSSES`, which says which methods accept each loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Method", "METHODS", "register_method", "method_spec", "presets"]


@dataclass(frozen=True)
class Method:
    """A registered training method."""

    name: str  #: the value of ``train.method``
    trainer: type  #: a :class:`bidfcl.train.loop.Trainer` subclass, called ``trainer(cfg, data, **kw)``
    #: the method trains a decision loss (``train.loss``): one experiment preset ``<name>-<loss>``
    #: per registered loss that accepts the method
    decision_loss: bool = False
    #: further experiment presets: name -> ``{"section.key": value}`` overrides
    presets: dict = field(default_factory=dict)
    doc: str = ""


#: name -> :class:`Method`, in registration order
METHODS: dict[str, Method] = {}


def register_method(name: str, *, decision_loss: bool = False, presets: Optional[dict] = None, doc: str = ""):
    """Class decorator: register a trainer class as method ``name`` (sets its ``method`` attribute).
    A second registration of a name replaces the first (e.g. a reloaded module)."""
    if not isinstance(name, str) or not name or "-" in name:
        raise ValueError(
            f"bidfcl.train: expected a method name as a non-empty string without '-' "
            f"(experiment presets are '<method>-<variant>'), got {name!r}"
        )

    def register(cls: type) -> type:
        cls.method = name
        METHODS[name] = Method(name, cls, decision_loss, dict(presets or {}), doc)
        return cls

    return register


def method_spec(name: str) -> Method:
    """The registered :class:`Method` ``name``; ValueError listing the known methods otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"bidfcl: unknown train.method {name!r} (registered: {', '.join(METHODS)})") from None


def presets() -> dict:
    """Every experiment preset: per method in registration order, ``<method>-<loss>`` for each
    registered decision loss it accepts (``{"train.method": ..., "train.loss": ...}``), then the
    method's own presets."""
    from ..objectives import decision_losses_for

    out = {}
    for name, spec in METHODS.items():
        if spec.decision_loss:
            for loss in decision_losses_for(name):
                out[f"{name}-{loss}"] = {"train.method": name, "train.loss": loss}
        out.update(spec.presets)
    return out
