"""Reading model weights from files: suite checkpoints, safetensors and torch state dicts.

No hub access: every pretrained weight comes from a file the user names. Torch files are
read with ``weights_only=True`` so an untrusted checkpoint cannot execute code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from suite.run.names import CHECKPOINT_FILE

if TYPE_CHECKING:  # torch is imported where weights are read: `sweep plan` checks paths only
    import torch

__all__ = ["WeightsError", "read_weights", "resolve_checkpoint_path"]


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the model."""


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    for key in ("model_ema", "model", "state_dict"):
        if key == "model_ema" and obj.get(key) is None:
            continue
        if isinstance(obj.get(key), dict):
            return _strip_prefix(obj[key]), config
    import torch

    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_prefix(obj), None
    raise WeightsError(f"{path}: no state dict found (keys: {', '.join(map(str, obj))})")


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def resolve_checkpoint_path(path: Path | str) -> Path:
    """A suite run directory stands for its ``checkpoint.pt``; other paths are files."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_FILE if path.is_dir() else path


def read_weights(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a state dict and, for suite checkpoints, the run config saved with it.

    A suite ``checkpoint.pt`` yields its EMA weights when the run kept an EMA, else the
    model weights.

    Returns:
        ``(state_dict, config)``; ``config`` is the resolved run config as a dict, or None.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _strip_prefix(load_file(str(path), device="cpu")), None
    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unpickling failure with the path
        raise WeightsError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from None
    return _unwrap(obj, path)
