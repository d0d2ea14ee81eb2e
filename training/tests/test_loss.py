"""WeightedInfoNCE on hand-computed cases."""
import math

import pytest
import torch

from skyloc_training.loss import WeightedInfoNCE, smoothing_from_iou, soft_cross_entropy

E = math.exp
# drone and tile descriptors whose cosine matrix is L = [[1, 0.6], [0, 0.8]]
DRONE = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TILE = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def test_smoothing_from_iou():
    eps = smoothing_from_iou(torch.tensor([0.0, 1.0]), k=5.0)
    assert eps[0].item() == pytest.approx(0.5)
    assert eps[1].item() == pytest.approx(1 - 1 / (1 + E(-5)), abs=1e-7)  # 0.00669
    eps = smoothing_from_iou(torch.tensor([0.0]), k=5.0, label_smoothing=0.2)
    assert eps[0].item() == pytest.approx(1 - 0.8 * 0.5)


def test_soft_cross_entropy_hand_computed():
    logits = torch.tensor([[1.0, 0.6], [0.0, 0.8]])
    # row 0 one-hot: lse - L00; row 1 eps=0.5: 0.5 (lse - 0.8) + 0.5 (lse - mean(0, 0.8))
    want = ((math.log(E(1) + E(0.6)) - 1) + (math.log(1 + E(0.8)) - 0.6)) / 2
    got = soft_cross_entropy(logits, torch.tensor([0.0, 0.5]))
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(0.54206, abs=1e-5)


def test_weighted_infonce_hand_computed_2x2():
    # logit scale log(1) = 0 -> L = cosines; pair 1 has IoU 0 (eps 0.5), pair 0 IoU 1
    eps0 = 1 - 1 / (1 + E(-5))
    drone_to_tile = ((math.log(E(1) + E(0.6)) - 1 + eps0 * (1 - 0.8))
                     + (math.log(1 + E(0.8)) - 0.6)) / 2
    tile_to_drone = ((math.log(E(1) + 1) - 1 + eps0 * (1 - 0.5))
                     + (math.log(E(0.6) + E(0.8)) - 0.75)) / 2
    want = (drone_to_tile + tile_to_drone) / 2
    assert want == pytest.approx(0.512550, abs=1e-6)
    loss = WeightedInfoNCE(k=5.0)(DRONE, TILE, torch.tensor(0.0), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(want, abs=1e-6)
    # without weights: plain symmetric InfoNCE
    plain = ((math.log(E(1) + E(0.6)) - 1) + (math.log(1 + E(0.8)) - 0.8)
             + (math.log(E(1) + 1) - 1) + (math.log(E(0.6) + E(0.8)) - 0.8)) / 4
    loss = WeightedInfoNCE()(DRONE, TILE, torch.tensor(0.0))
    assert loss.item() == pytest.approx(plain, abs=1e-6)


def test_logit_scale_multiplies_and_is_capped():
    loss = WeightedInfoNCE()(DRONE, TILE, torch.tensor(math.log(2.0)))
    want = ((math.log(E(2) + E(1.2)) - 2) + (math.log(1 + E(1.6)) - 1.6)
            + (math.log(E(2) + 1) - 2) + (math.log(E(1.2) + E(1.6)) - 1.6)) / 4
    assert loss.item() == pytest.approx(want, abs=1e-6)
    # exp(10) is capped at 100: same loss as log(100)
    a = WeightedInfoNCE()(DRONE, TILE, torch.tensor(10.0))
    b = WeightedInfoNCE()(DRONE, TILE, torch.tensor(math.log(100.0)))
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_same_place_entries_are_not_negatives():
    # 3 pairs; pairs 0 and 1 share their tile: logit (0, 1) and (1, 0) leave the softmax
    logits = torch.tensor([[2.0, 1.5, 0.0], [1.0, 1.0, 0.5], [0.2, 0.1, 3.0]])
    same = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    got = soft_cross_entropy(logits, torch.zeros(3), same)
    want = ((math.log(E(2) + 1) - 2) + (math.log(E(1) + E(0.5)) - 1)
            + (math.log(E(0.2) + E(0.1) + E(3)) - 3)) / 3
    assert got.item() == pytest.approx(want, abs=1e-6)
    # with smoothing the uniform part spreads over the kept columns only (2 of 3 in row 0)
    got = soft_cross_entropy(logits, torch.tensor([1.0, 0.0, 0.0]), same)
    row0 = math.log(E(2) + 1) - (2 + 0) / 2
    want = (row0 + (math.log(E(1) + E(0.5)) - 1)
            + (math.log(E(0.2) + E(0.1) + E(3)) - 3)) / 3
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_gradient_pulls_pairs_together():
    torch.manual_seed(0)
    drone = torch.randn(6, 8, requires_grad=True)
    tile = torch.randn(6, 8)
    loss_fn = WeightedInfoNCE()
    scale = torch.tensor(math.log(1 / 0.07))
    before = loss_fn(drone, tile, scale, torch.full((6,), 0.8)).item()
    opt = torch.optim.SGD([drone], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(drone, tile, scale, torch.full((6,), 0.8))
        loss.backward()
        opt.step()
    assert loss.item() < before * 0.5


def test_bad_shapes():
    with pytest.raises(ValueError, match='must both be'):
        WeightedInfoNCE()(torch.zeros(2, 3), torch.zeros(3, 3), torch.tensor(0.0))
    with pytest.raises(ValueError, match='label_smoothing'):
        WeightedInfoNCE(label_smoothing=1.0)
