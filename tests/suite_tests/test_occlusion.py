from __future__ import annotations

import pytest
import torch

import suite  # noqa: F401 - torchvision shim before timm
from suite.train.occlusion import occlude_patches


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dropped_cells(x: torch.Tensor, out: torch.Tensor, patch: int) -> torch.Tensor:
    """Per cell: True if every pixel was filled, False if untouched; fails on partial cells."""
    b, c, h, w = x.shape
    changed = (out != x).unflatten(3, (w // patch, patch)).unflatten(2, (h // patch, patch))
    full = changed.all(5).all(3).all(1)
    none = ~changed.any(5).any(3).any(1)
    assert torch.all(full | none), "an occluded cell is not aligned with the patch grid"
    return full


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.75, 1.0, 0.33])
@pytest.mark.parametrize("size, patch", [(32, 8), (224, 16), (30, 5)])
def test_exactly_the_requested_number_of_cells_is_dropped(fraction: float, size: int, patch: int) -> None:
    x = torch.rand(6, 3, size, size, generator=_gen()) + 1.0  # never equal to the fill
    out = occlude_patches(x, patch, fraction, _gen(1), fill=0.0)
    cells = (size // patch) ** 2
    dropped = _dropped_cells(x, out, patch)
    assert dropped.flatten(1).sum(1).tolist() == [round(fraction * cells)] * 6
    assert torch.all(out[(out != x)] == 0.0)


def test_cells_differ_between_images_and_repeat_for_a_seed() -> None:
    x = torch.ones(8, 3, 32, 32)
    a = _dropped_cells(x, occlude_patches(x, 4, 0.5, _gen(3), fill=-1.0), 4)
    b = _dropped_cells(x, occlude_patches(x, 4, 0.5, _gen(3), fill=-1.0), 4)
    assert torch.equal(a, b)
    assert len({tuple(m.flatten().tolist()) for m in a}) == 8


def test_input_is_not_modified() -> None:
    x = torch.rand(2, 3, 16, 16, generator=_gen())
    before = x.clone()
    occlude_patches(x, 4, 0.75, _gen())
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": -0.1}, "fraction"),
        ({"patch": 0}, "patch"),
        ({"patch": 5}, "patch"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    args = {"patch": 8, "fraction": 0.5} | kwargs
    with pytest.raises(ValueError, match=name):
        occlude_patches(torch.rand(2, 3, 32, 32), args["patch"], args["fraction"], _gen())
