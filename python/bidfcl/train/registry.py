"""The training methods: each trainer registers itself here, with its experiment presets.

    @register_method("dfcl", decision_loss=True, config=DfclConfig, check=check_dfcl_section,
                     doc="decision-focused learning on RCT rows")
    class DfclTrainer(Trainer): ...

A method's config section (``[dfcl]`` above: a dataclass of keys with defaults) is part of every
:class:`bidfcl.train.RunConfig` from then on (``cfg.dfcl``), read, checked and stored in
checkpoints like the shared sections.

Config validation (``train.method``), :func:`bidfcl.train.make_trainer`, the experiment presets
and the error messages read :data:`METHODS`; decision losses have their own registry,
:data:`bidfcl.objectives.DECISION_LOSSES`, which says which methods accept each loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..objectives import decision_losses_for

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
    #: the dataclass of the method's own config section ``[<name>]`` (None: the method reads only
    #: the shared sections); every key has a default, like the shared sections'
    config: Optional[type] = None
    #: ``check(section, cfg)``: raises ConfigError for a bad value of the section (after the
    #: shared sections are checked; ``cfg`` is the whole RunConfig)
    check: Optional[Callable] = None
    #: keys that lived in ``[train]`` before this section and now have another name here:
    #: old key -> {new key in the section: what it means} (e.g. Bi-DFCL's ``k``, which meant two things)
    renamed: dict = field(default_factory=dict)


#: name -> :class:`Method`, in registration order
METHODS: dict[str, Method] = {}


def register_method(
    name: str,
    *,
    decision_loss: bool = False,
    presets: Optional[dict] = None,
    doc: str = "",
    config: Optional[type] = None,
    check: Optional[Callable] = None,
    renamed: Optional[dict] = None,
):
    """Class decorator: register a trainer class as method ``name`` (sets its ``method`` attribute),
    with its config section ``[name]`` (a dataclass; ``cfg.<name>`` of a RunConfig) and the checks
    of that section. A second registration of a name replaces the first (e.g. a reloaded module)."""
    if not isinstance(name, str) or not name or "-" in name:
        raise ValueError(
            f"bidfcl.train: expected a method name as a non-empty string without '-' "
            f"(experiment presets are '<method>-<variant>'), got {name!r}"
        )

    if config is not None and not dataclasses.is_dataclass(config):
        raise ValueError(f"bidfcl.train: expected the config section of method {name!r} as a dataclass, got {config!r}")

    def register(cls: type) -> type:
        cls.method = name
        METHODS[name] = Method(name, cls, decision_loss, dict(presets or {}), doc, config, check, dict(renamed or {}))
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
    out = {}
    for name, spec in METHODS.items():
        if spec.decision_loss:
            for loss in decision_losses_for(name):
                out[f"{name}-{loss}"] = {"train.method": name, "train.loss": loss}
        out.update(spec.presets)
    return out
