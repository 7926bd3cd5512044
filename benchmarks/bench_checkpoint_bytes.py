"""Bytes a run leaves on disk: while training vs once finished (``run.keep_checkpoints``).

Builds each model with the suite's factory (random weights, no download), takes one AdamW step
so the optimiser holds its moment buffers, and serialises the payloads the trainer writes:
``checkpoint.pt`` while training (model, optimiser, EMA, RNG, history) — kept twice, with
``checkpoint.prev.pt`` — and the final weights a finished run keeps by default (model and EMA).

    .venv/bin/python benchmarks/bench_checkpoint_bytes.py [--models deit_small_patch16_224 ...]
"""

from __future__ import annotations

import argparse
import io
import platform

import suite  # noqa: F401 - torchvision import guard before timm
import torch

from suite.models.factory import build_model


class _Count(io.RawIOBase):
    """A write-only stream that counts bytes instead of keeping them."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.size += len(data)
        return len(data)


def _bytes(payload: dict) -> int:
    counter = _Count()
    torch.save(payload, counter)
    return counter.size


def measure(name: str) -> tuple[int, int, int]:
    """(parameters, bytes while training incl. checkpoint.prev.pt, bytes once finished)."""
    model = build_model(name, num_classes=1000, img_size=224)
    ema = build_model(name, num_classes=1000, img_size=224)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    history = [{"epoch": e, "top1": 0.0, "train_loss": 0.0} for e in range(310)]
    training = _bytes({
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "model_ema": ema.state_dict(),
        "rng": {"torch": torch.get_rng_state()}, "history": history, "epoch": 310, "step": 0,
    })
    final = _bytes({"model": model.state_dict(), "model_ema": ema.state_dict(), "history": history, "final": True})
    return sum(p.numel() for p in model.parameters()), 2 * training, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.machine()}")
    print("| model | parameters | bytes while training (checkpoint.pt + .prev) | bytes once finished | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        params, training, final = measure(name)
        print(f"| {name} | {params / 1e6:.1f} M | {training / 1e9:.2f} GB | {final / 1e9:.2f} GB | "
              f"{training / final:.1f}x |")


if __name__ == "__main__":
    main()
