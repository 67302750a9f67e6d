"""Which device a run uses: ``"auto" | "cpu" | "cuda" | "cuda:N"`` resolved and checked in one place."""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "resolve_device"]


class DeviceError(ValueError):
    """A device that does not exist on this machine (or a spelling torch does not know)."""


def resolve_device(spec, where: str = "device") -> torch.device:
    """``spec`` as a :class:`torch.device` that exists here.

    ``auto``: the current CUDA device when torch sees one, else the CPU. ``cpu``. ``cuda``: the
    current CUDA device. ``cuda:N``: CUDA device N. A ``torch.device`` is checked the same way.
    ``where`` names the setting in error messages (e.g. ``train.device``).
    """
    if isinstance(spec, torch.device):
        dev = spec
    elif isinstance(spec, str):
        text = spec.strip().lower()
        if text == "auto":
            return (
                torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
            )
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise DeviceError(
                f"bidfcl: expected {where} to be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}"
            ) from None
    else:
        raise DeviceError(f"bidfcl: expected {where} to be a string like 'cuda:0', got {type(spec).__name__}")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise DeviceError(f"bidfcl: {where} = {spec!r}: bidfcl runs on 'cpu' or 'cuda' devices, got {dev.type!r}")
    if not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no CUDA device"
        raise DeviceError(f"bidfcl: {where} = {spec!r}, but {why}; use 'cpu' or 'auto'")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= count:
        raise DeviceError(
            f"bidfcl: {where} = {spec!r}, but this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", index)
