"""Training batches of in-memory images, cropped, flipped and normalised a whole batch at a time
on the training device.

The per-sample path (``SeededDataset`` with torchvision's ``RandomResizedCrop`` and flip) costs
about 0.8 ms of Python per 32 px image in the main process: for the built-in data that was 102 ms
of a 237 ms step on two cores (BENCHMARKS.md, "Training loop"). Here the uint8 images live on the
device once, and each batch is one gather, two batched matrix products (a separable resampling
matrix per sample and axis, the flip folded into it) and one per-channel affine.

What stays exactly as before is every random draw: each sample's crop box and flip are drawn on
the host from its seed, by torchvision's ``RandomResizedCrop.make_params`` logic op for op and
the flip's ``torch.rand(1) < p``, on a generator seeded with the sample's seed, which gives the
stream ``SeededDataset``'s ``torch.manual_seed(seed)`` gives the global generator. So a resumed
run sees the same crops, and a seed gives the same crops on any device. The draws never touch
the global generator, so the next batch's are made in a thread while the current batch trains
(about 0.1 ms per sample of small torch calls). The resampling is torchvision's antialiased
bilinear resize (PyTorch's ``_upsample_bilinear2d_aa`` weights: a triangle filter, widened when
shrinking, edge pixels clamped to the crop), computed in float32 and not rounded back to uint8
as the per-sample path on uint8 tensors is: a batch differs from the per-sample images by at
most one grey level (half a level of rounding, and torchvision's fixed-point uint8 kernel).

Used for training batches when the data is in memory (``data.source=builtin``), the order is
timm's, no offline teacher maps need the crop record and random erasing is off (the built-in
defaults); otherwise training falls back to the per-sample path.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

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
        self._affine: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def params(self, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
        """``(B, 5)`` int64 ``[top, left, height, width, flipped]`` per sample, drawn from its seed.

        Each sample's draws come from a generator of its own seeded with its seed: the stream the
        global generator gives after ``torch.manual_seed(seed)``, so the draws are those of the
        per-sample path, and drawing never touches the global generator (it may run beside the
        training step, see :class:`InMemoryBatches`).
        """
        rows = []
        gen = torch.Generator()
        for seed in seeds:
            gen.manual_seed(seed)
            top, left, h, w = self._box(gen, height, width)
            flipped = bool(self.hflip) and bool(torch.rand(1, generator=gen) < self.hflip)
            rows.append((top, left, h, w, int(flipped)))
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, 5)

    def _box(self, gen: torch.Generator, height: int, width: int) -> tuple[int, int, int, int]:
        """torchvision's ``RandomResizedCrop.make_params``, op for op, on ``gen``."""
        area = height * width
        scale, ratio = self._crop.scale, self._crop.ratio
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
            aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=gen)).item()
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,), generator=gen).item())
                left = int(torch.randint(0, width - w + 1, size=(1,), generator=gen).item())
                return top, left, h, w
        in_ratio = float(width) / float(height)  # the fallback: a central crop
        if in_ratio < min(ratio):
            w, h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = height, int(round(height * max(ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Float32 ``(B, C, size, size)`` normalised images from uint8 ``(B, C, H, W)`` on any device."""
        params = params.to(images.device, non_blocking=True)
        top, left, height, width, flipped = params.unbind(1)
        rows = resample_weights(top, height, self.size, images.shape[-2])
        cols = resample_weights(left, width, self.size, images.shape[-1])
        cols = torch.where(flipped.bool()[:, None, None], cols.flip(1), cols)
        out = rows[:, None] @ images.to(torch.float32) @ cols.transpose(1, 2)[:, None]
        key = images.device
        if key not in self._affine:  # ToDtype (/ 255) and Normalize as one multiply-add per channel
            std = torch.tensor(self.std, dtype=torch.float32)
            mean = torch.tensor(self.mean, dtype=torch.float32)
            self._affine[key] = ((1.0 / (255.0 * std)).view(1, -1, 1, 1).to(key), (-mean / std).view(1, -1, 1, 1).to(key))
        scale, shift = self._affine[key]
        return out.mul_(scale).add_(shift)


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
        """The batches; the next batch's crop draws are made in a thread while this one trains."""
        height, width = self.images.shape[-2:]

        def draw(batch: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.tensor([i for i, _ in batch], dtype=torch.int64)
            return index, self.augment.params([seed for _, seed in batch], height, width)

        batches = iter(self._batches())
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crop-draws") as pool:
            ahead = [pool.submit(draw, batch) for batch in itertools.islice(batches, 1)]
            while ahead:
                index, params = ahead.pop().result()
                ahead += [pool.submit(draw, batch) for batch in itertools.islice(batches, 1)]
                index = index.to(self.device, non_blocking=True)
                yield self.augment(self.images[index], params), self.labels[index]
