from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import suite  # noqa: F401 - torchvision shim before timm
from suite.teacher.cam import Teacher, class_activation_maps

WEIGHT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
BIAS = torch.tensor([0.0, -100.0, 0.5])


class TinyCNN(nn.Module):
    """Features are the image itself (2 channels), then a linear classifier on the pooled features."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3), keepdim=True)
        return self.head(pooled.flatten(1) if isinstance(self.head, nn.Linear) else pooled).flatten(1)


def _linear_head() -> nn.Module:
    head = nn.Linear(2, 3)
    head.weight.data.copy_(WEIGHT)
    head.bias.data.copy_(BIAS)
    return head


def _conv_head() -> nn.Module:
    head = nn.Conv2d(2, 3, 1)
    head.weight.data.copy_(WEIGHT.view(3, 2, 1, 1))
    head.bias.data.copy_(BIAS)
    return head


def _image() -> torch.Tensor:
    x = torch.empty(1, 2, 4, 4)
    x[0, 0] = torch.arange(16.0).view(4, 4) / 8
    x[0, 1] = 0.75
    return x


def _by_hand(grid: int) -> list[list[float]]:
    """Class 2 logit at each location: feature0 - feature1 + 0.5, block-averaged, clamped, normalised."""
    logit = [[(4 * r + c) / 8 - 0.75 + 0.5 for c in range(4)] for r in range(4)]
    k = 4 // grid
    cells = [
        [
            max(0.0, sum(logit[r * k + i][c * k + j] for i in range(k) for j in range(k)) / (k * k))
            for c in range(grid)
        ]
        for r in range(grid)
    ]
    total = sum(map(sum, cells))
    return [[v / total for v in row] for row in cells]


@pytest.mark.parametrize("head", [_linear_head, _conv_head], ids=["linear", "conv1x1"])
@pytest.mark.parametrize("grid", [4, 2, 1])
def test_cnn_cam_matches_a_hand_computation(head, grid: int) -> None:
    model = TinyCNN(head()).eval()
    cam = class_activation_maps(model, _image(), torch.tensor([2]), grid)
    assert cam.dtype == torch.float32
    assert cam.shape == (1, grid, grid)
    assert cam[0].tolist() == [pytest.approx(row, abs=1e-6) for row in _by_hand(grid)]


def test_cnn_cam_without_positive_activation_stays_zero() -> None:
    model = TinyCNN(_linear_head()).eval()
    cam = class_activation_maps(model, _image().repeat(2, 1, 1, 1), torch.tensor([1, 2]), 4)
    assert torch.equal(cam[0], torch.zeros(4, 4))  # class 1 has bias -100
    assert cam[1].sum().item() == pytest.approx(1.0)


def test_teacher_without_clamping_keeps_negative_locations_and_divides_by_the_signed_sum() -> None:
    """``teacher.clamp_negative=false`` (the reference): the class-2 logit map (-0.25 .. 1.625) keeps
    its negative cells and sums to 1."""
    logit = torch.tensor([[(4 * r + c) / 8 - 0.25 for c in range(4)] for r in range(4)])
    teacher = Teacher.from_module(TinyCNN(_linear_head()), clamp_negative=False)
    cam = teacher.maps(_image(), torch.tensor([2]), 4)
    assert cam[0].tolist() == [pytest.approx(row, abs=1e-6) for row in (logit / logit.sum()).tolist()]
    assert cam[0, 0, 0].item() < 0
    clamped = Teacher.from_module(TinyCNN(_linear_head())).maps(_image(), torch.tensor([2]), 4)
    assert clamped.min().item() == 0.0 and clamped.sum().item() == pytest.approx(1.0)


def _vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        embed_dim=48,
        depth=1,
        num_heads=3,
        num_classes=5,
        **kwargs,
    ).eval()


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_vit_cam_is_the_head_on_every_patch_token(global_pool: str) -> None:
    model = _vit(global_pool=global_pool)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 4])
    cam = class_activation_maps(model, x, y, 4)
    assert cam.shape == (3, 4, 4)
    with torch.no_grad():
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
        logits = model.head(model.fc_norm(tokens))  # fc_norm is Identity for 'token' pooling
    expected = logits[torch.arange(3), :, y].view(3, 4, 4).clamp_min(0)
    expected = expected / expected.sum((1, 2), keepdim=True)
    assert torch.allclose(cam, expected, atol=1e-5)


def test_vit_cam_is_block_averaged_to_a_coarser_grid() -> None:
    model = _vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 2])
    with torch.no_grad():
        tokens = model.forward_features(x)[:, 1:]
        logit = model.head(tokens)[torch.arange(2), :, y].view(2, 1, 4, 4)
    expected = torch.nn.functional.avg_pool2d(logit, 2).view(2, 2, 2).clamp_min(0)
    expected = expected / expected.sum((1, 2), keepdim=True)
    assert torch.allclose(class_activation_maps(model, x, y, 2), expected, atol=1e-5)


@pytest.mark.parametrize("grid", [3, 7, 14])
def test_cam_on_a_non_dividing_grid_is_normalised(grid: int) -> None:
    model = timm.create_model("resnet18", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    cam = class_activation_maps(model, x, torch.tensor([0, 6]), grid)
    assert cam.shape == (2, grid, grid)
    assert (cam >= 0).all()
    sums = cam.sum((1, 2))
    assert torch.all((sums == 0) | ((sums - 1).abs() < 1e-5))  # a map sums to 1, or is all zero


class FlatFeatures(nn.Module):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))

    def get_classifier(self) -> nn.Module:
        return nn.Linear(3, 2)


@pytest.mark.parametrize(
    "model, match",
    [
        (FlatFeatures(), "NCHW/NHWC feature maps"),
        (timm.create_model("resnet18", num_classes=0), "classifier"),
        (nn.Linear(3, 3), "forward_features"),
    ],
    ids=["pooled-features", "no-classifier", "not-timm"],
)
def test_unsupported_models_raise_a_clear_error(model: nn.Module, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        class_activation_maps(model.eval(), torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), 2)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"grid": 0}, "grid"), ({"y": torch.tensor([0])}, "y"), ({"x": torch.randn(3, 32, 32)}, "x")],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    args = {"x": torch.randn(2, 3, 32, 32), "y": torch.tensor([0, 1]), "grid": 2} | kwargs
    with pytest.raises(ValueError, match=name):
        class_activation_maps(TinyCNN(_linear_head()), args["x"], args["y"], args["grid"])


def test_teacher_is_frozen_and_stays_in_eval_mode() -> None:
    model = _vit().train()
    teacher = Teacher.from_module(model)
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    model.train()  # someone flips it back; maps must still use eval-mode behaviour
    maps = teacher.maps(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), 4)
    assert not teacher.model.training
    assert maps.shape == (2, 4, 4)
    assert not maps.requires_grad


# Three classes on a 2 x 2 map; at each location the classes rank differently.
#   location (0,0): logits 3, 2, 1   -> class 1 is 2nd
#   location (0,1): logits 1, 2, 3   -> class 1 is 2nd
#   location (1,0): logits 2, 1, 3   -> class 1 is 3rd
#   location (1,1): logits 0, 5, 4   -> class 1 is 1st
THREE_CLASS = torch.tensor(
    [[[[3.0, 1.0], [2.0, 0.0]], [[2.0, 2.0], [1.0, 5.0]], [[1.0, 3.0], [3.0, 4.0]]]]
)


@pytest.mark.parametrize(
    "k, expected",
    [
        (1, [[0.0, 0.0], [0.0, 5.0]]),
        (2, [[2.0, 2.0], [0.0, 5.0]]),
        (3, [[2.0, 2.0], [1.0, 5.0]]),
        (None, [[2.0, 2.0], [1.0, 5.0]]),
    ],
)
def test_topk_gate_keeps_the_ground_truth_only_where_it_is_among_the_top_k(k: int | None, expected: list) -> None:
    from suite.teacher.cam import class_rank, topk_gate

    y = torch.tensor([1])
    assert class_rank(THREE_CLASS, y).tolist() == [[[1, 1], [2, 0]]]
    assert topk_gate(THREE_CLASS, y, k).tolist() == [expected]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_teacher_topk_gates_a_hand_made_three_class_cam(k: int) -> None:
    # features are the image: feature0 rises along the rows, feature1 falls; the three classes
    # score f0, f1 and 0.5 (a constant), so each class is top-1 somewhere
    x = torch.empty(1, 2, 4, 4)
    x[0, 0] = torch.arange(16.0).view(4, 4) / 15
    x[0, 1] = 1.0 - x[0, 0]
    head = nn.Linear(2, 3)
    head.weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    head.bias.data.copy_(torch.tensor([0.0, 0.0, 0.5]))
    y = torch.tensor([2])
    by_hand = torch.zeros(4, 4)
    for r in range(4):
        for c in range(4):
            f0 = (4 * r + c) / 15
            scores = [f0, 1.0 - f0, 0.5]
            above = sum(s > scores[2] for s in scores)  # always 1: one of f0, 1 - f0 is >= 0.5
            by_hand[r, c] = scores[2] if above < k else 0.0
    expected = by_hand / by_hand.sum() if by_hand.sum() > 0 else by_hand
    maps = Teacher(TinyCNN(head), topk=k).maps(x, y, grid=4)
    assert torch.allclose(maps, expected.view(1, 4, 4), atol=1e-6)
    assert (maps.sum().item() == 0) == (k == 1)  # class 2 is never the top class


def test_vit_topk_uses_the_head_on_every_patch_token() -> None:
    model = _vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 2])
    with torch.no_grad():
        logits = model.head(model.forward_features(x)[:, 1:])  # (B, 16, K)
    gt = logits[torch.arange(2), :, y]
    rank = (logits > gt.unsqueeze(-1)).sum(-1)
    expected = torch.where(rank < 2, gt, 0.0).view(2, 4, 4)
    from suite.teacher.cam import raw_activation_maps

    assert torch.allclose(raw_activation_maps(model, x, y, topk=2), expected, atol=1e-5)


@pytest.mark.parametrize("topk", [0, -1, 1.5, True])
def test_bad_topk_is_refused(topk: object) -> None:
    with pytest.raises(ValueError, match="topk"):
        Teacher(TinyCNN(_linear_head()), topk=topk)
