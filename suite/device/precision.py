"""Numeric precision of a run on its device: the autocast dtype, loss scaling and TF32.

``run.amp_dtype`` chooses the autocast dtype on CUDA:

- ``auto`` (default): bf16 where the GPU runs it natively (Ampere and newer, compute
  capability >= 8.0), else fp16. A V100 (7.0) has no bf16 tensor cores: bf16 there falls back to
  slow kernels, while fp16 runs at full speed.
- ``bf16`` or ``fp16`` force one.

fp16 needs loss scaling: :class:`Precision` then carries a ``torch.amp.GradScaler`` whose state is
saved in the checkpoint's ``scaler`` slot; gradients are unscaled before clipping. bf16 has fp32's
exponent range and needs none. The online teacher and the evaluation use the same dtype as the
student. CPU runs are float32 (autocast is off), whatever the options say.

TF32 matmuls and convolutions are enabled on Ampere and newer (compute capability >= 8.0), as
timm's and DeiT's training scripts do: float32 work outside autocast (the float32 loss, the
classifier of the teacher's CAM, EMA) runs on tensor cores at ~10 bits of mantissa.

The reference (Sense-X/TokenMix, DeiT's code) trains with fp16 autocast and a loss scaler; on
Ampere and newer the suite's ``auto`` picks bf16, which needs no scaler and gives the same
accuracy at ImageNet scale. ``run.amp_dtype=fp16`` is the reference's setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Precision", "resolve_precision", "autocast", "enable_tf32", "native_bf16"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a GPU that runs bf16 natively (compute capability >= 8.0)."""
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def _pick(amp_dtype: str, *, native: bool) -> torch.dtype:
    """The autocast dtype for an ``run.amp_dtype`` choice on a GPU with or without native bf16.

    >>> _pick("auto", native=True), _pick("auto", native=False), _pick("bf16", native=False)
    (torch.bfloat16, torch.float16, torch.bfloat16)
    """
    if amp_dtype == "auto":
        return torch.bfloat16 if native else torch.float16
    if amp_dtype not in _DTYPES:
        raise ValueError(f"run.amp_dtype must be one of auto, bf16, fp16, but got {amp_dtype!r}")
    return _DTYPES[amp_dtype]


@dataclass
class Precision:
    """How one process computes: autocast on or off, its dtype, and the loss scaler (fp16 only)."""

    device: torch.device
    enabled: bool = False
    dtype: torch.dtype = torch.bfloat16
    scaler: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """``bf16``, ``fp16`` or ``fp32``: what summary.json records."""
        if not self.enabled:
            return "fp32"
        return "bf16" if self.dtype == torch.bfloat16 else "fp16"

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.dtype if self.enabled else None)

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def resolve_precision(device: torch.device, *, amp: bool, amp_dtype: str) -> Precision:
    """The precision of a run on ``device``: ``run.amp`` and ``run.amp_dtype`` on CUDA, fp32 elsewhere."""
    if not amp or device.type != "cuda":
        _pick(amp_dtype, native=False)  # a bad value fails on CPU too
        return Precision(device)
    dtype = _pick(amp_dtype, native=native_bf16(device))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return Precision(device, enabled=True, dtype=dtype, scaler=scaler)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on CUDA; a disabled context for ``None`` or a CPU device."""
    enabled = dtype is not None and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=enabled)


def enable_tf32(device: torch.device) -> bool:
    """Turn on TF32 matmuls/convolutions on Ampere and newer; returns whether it did."""
    if not native_bf16(device):
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True
