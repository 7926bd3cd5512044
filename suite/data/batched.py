"""Training batches of in-memory images, cropped, flipped and normalised a whole batch at a time
on the training device.

The per-sample path (``SeededDataset`` with torchvision's ``RandomResizedCrop`` and flip) costs
about 0.8 ms of Python per 32 px image in the main process: for the built-in data that was 102 ms
of a 237 ms step on two cores (BENCHMARKS.md, "Training loop"). Here the uint8 images live on the
device once, and each batch is one gather, two batched matrix products (a separable resampling
matrix per sample and axis, the flip folded into it) and one per-channel affine.

What stays exactly as before is every random draw: each sample's crop box and flip are drawn on
the host from its seed, with torchvision's own ``RandomResizedCrop.make_params`` and the flip's
``torch.rand(1) < p``, after ``torch.manual_seed(seed)``, just as ``SeededDataset`` seeds before
its transform. So a resumed run sees the same crops, and a seed gives the same crops on any
device. The resampling is torchvision's antialiased bilinear resize (PyTorch's
``_upsample_bilinear2d_aa`` weights: a triangle filter, widened when shrinking, edge pixels
clamped to the crop), computed in float32 and not rounded back to uint8 as the per-sample path
on uint8 tensors is: a batch differs from the per-sample images by at most half a grey level.

Used for training batches when the data is in memory (``data.source=builtin``), the order is
timm's, no offline teacher maps need the crop record and random erasing is off (the built-in
defaults); otherwise training falls back to the per-sample path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, Sampler
from torchvision.transforms import v2

__all__ = ["BatchedCropFlip", "InMemoryBatches", "resample_weights"]


def resample_weights(start: torch.Tensor, length: torch.Tensor, out: int, size: int) -> torch.Tensor:
    """``(B, out, size)`` rows that resample ``[start, start + length)`` of an axis of ``size``
    pixels to ``out`` pixels, as torchvision's antialiased bilinear resize does.

    Example:
        >>> w = resample_weights(torch.tensor([1]), torch.tensor([2]), 4, 4)
        >>> w[0].sum(-1).tolist(), w[0, 0].tolist()
        ([1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0])
    """
    start, length = start.to(torch.float32), length.to(torch.float32)
    device = start.device
    scale = length / out  # input pixels per output pixel
    widen = scale.clamp(min=1.0)  # the filter widens when shrinking (antialias), else 1 pixel
    center = (torch.arange(out, device=device, dtype=torch.float32) + 0.5)[None, :] * scale[:, None]
    local = torch.arange(size, device=device, dtype=torch.float32)[None, None, :] - start[:, None, None]
    weights = (1.0 - ((local + 0.5 - center[..., None]) / widen[:, None, None]).abs()).clamp(min=0.0)
    weights = weights * ((local >= 0) & (local < length[:, None, None]))
    return weights / weights.sum(-1, keepdim=True)


class BatchedCropFlip:
    """Random resized crop, horizontal flip, ``ToDtype`` and ``Normalize`` of a uint8 batch.

    Args:
        size: Output side.
        scale, ratio: ``RandomResizedCrop``'s ranges.
        hflip: Flip probability (0 draws nothing, as the per-sample path has no flip step then).
        mean, std: Normalisation of the [0, 1] images.
    """

    def __init__(
        self,
        size: int,
        *,
        scale: tuple[float, float],
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.0,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.size, self.hflip = int(size), float(hflip)
        self._crop = v2.RandomResizedCrop(self.size, scale=scale, ratio=ratio, antialias=True)
        self.mean, self.std = tuple(mean), tuple(std)

    def params(self, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
        """``(B, 5)`` int64 ``[top, left, height, width, flipped]`` per sample, drawn from its seed."""
        probe = [torch.empty(0, height, width, dtype=torch.uint8)]  # only its size is read
        rows = []
        for seed in seeds:
            torch.default_generator.manual_seed(seed)  # the CPU generator, as seed_everything seeds it
            box = self._crop.make_params(probe)
            flipped = bool(self.hflip) and bool(torch.rand(1) < self.hflip)
            rows.append((box["top"], box["left"], box["height"], box["width"], int(flipped)))
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, 5)

    def __call__(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Float32 ``(B, C, size, size)`` normalised images from uint8 ``(B, C, H, W)`` on any device."""
        params = params.to(images.device)
        top, left, height, width, flipped = params.unbind(1)
        rows = resample_weights(top, height, self.size, images.shape[-2])
        cols = resample_weights(left, width, self.size, images.shape[-1])
        cols = torch.where(flipped.bool()[:, None, None], cols.flip(1), cols)
        out = rows[:, None] @ images.to(torch.float32) @ cols.transpose(1, 2)[:, None]
        mean = torch.tensor(self.mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
        return (out / 255.0 - mean) / std


class InMemoryBatches:
    """One pass of training batches over in-memory uint8 images, augmented on ``device``.

    Takes the place of a :class:`~suite.data.workers.SeededLoader` for the training epochs of
    in-memory data: the same sampler (so the same samples, seeds and resume points), batches of
    ``(images, labels)`` already on ``device``. The images are copied to the device once per
    dataset (``device_images``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        sampler: Sampler,
        batch_size: int,
        augment: BatchedCropFlip,
        device: torch.device,
    ) -> None:
        self.images, self.labels = images, labels
        self.sampler, self.batch_size, self.augment, self.device = sampler, batch_size, augment, device
        self.shard = None

    def _batches(self) -> BatchSampler:
        return BatchSampler(self.sampler, self.batch_size, drop_last=True)

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        height, width = self.images.shape[-2:]
        for batch in self._batches():
            index = torch.tensor([i for i, _ in batch], dtype=torch.int64)
            params = self.augment.params([seed for _, seed in batch], height, width)
            index = index.to(self.device, non_blocking=True)
            yield self.augment(self.images[index], params), self.labels[index]
