"""The contrastive loss against values worked out by hand, and its temperature learning and clamping."""

from __future__ import annotations

import math

import pytest
import torch

from training.loss import ContrastiveLoss, squared_distance, symmetric_infonce

# 2 x 2, temperature 0.5. Similarities text @ audio.T = [[1, 0.6], [0, 0.8]], logits / 0.5 = [[2, 1.2], [0, 1.6]].
#   text→audio rows:    -log softmax = log(1 + e^-0.8) = 0.3711007,  log(1 + e^-1.6) = 0.1839007  -> mean 0.2775007
#   audio→text columns: [2, 0] true 2 -> log(1 + e^-2) = 0.1269280,  [1.2, 1.6] true 1.6 -> log(1 + e^-0.4) = 0.5130153
#                                                                                          -> mean 0.3199716
#   symmetric: (0.2775007 + 0.3199716) / 2 = 0.2987362
TEXT_2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
AUDIO_2 = torch.tensor([[1.0, 0.0], [0.6, 0.8]])

# 3 x 3, temperature 1. Similarities [[1, 0.8, 0], [0, 0.6, 0], [0, 0, 1]].
#   rows:    log(e + e^0.8 + 1) - 1 = 0.7823525, log(2 + e^0.6) - 0.6 = 0.7408049, log(2 + e) - 1 = 0.5514447
#            -> mean 0.6915340
#   columns: [1, 0, 0] -> 0.5514447, [0.8, 0.6, 0] true 0.6 -> log(e^0.8 + e^0.6 + 1) - 0.6 = 1.0189247,
#            [0, 0, 1] -> 0.5514447
#            -> mean 0.7072714
#   symmetric: 0.6994027
TEXT_3 = torch.eye(3)
AUDIO_3 = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])


def test_symmetric_infonce_2x2_hand_computed() -> None:
    assert symmetric_infonce(TEXT_2, AUDIO_2, 0.5).item() == pytest.approx(0.2987362, abs=1e-6)


def test_symmetric_infonce_3x3_hand_computed() -> None:
    assert symmetric_infonce(TEXT_3, AUDIO_3, 1.0).item() == pytest.approx(0.6994027, abs=1e-6)


def test_infonce_is_symmetric_in_its_two_directions() -> None:
    assert symmetric_infonce(AUDIO_3, TEXT_3, 1.0).item() == pytest.approx(0.6994027, abs=1e-6)


def test_squared_distance_is_summed_over_dimensions_and_averaged_over_pairs() -> None:
    # row 0: 0; row 1: (0 - 0.6)^2 + (1 - 0.8)^2 = 0.36 + 0.04 = 0.4  -> mean 0.2
    assert squared_distance(TEXT_2, AUDIO_2).item() == pytest.approx(0.2, abs=1e-7)


def test_stage_two_adds_weighted_squared_distance() -> None:
    loss = ContrastiveLoss(temperature=0.5, mse_weight=0.5)

    terms = loss(TEXT_2, AUDIO_2)

    assert terms.infonce.item() == pytest.approx(0.2987362, abs=1e-6)
    assert terms.squared_distance.item() == pytest.approx(0.2, abs=1e-6)
    assert terms.total.item() == pytest.approx(0.2987362 + 0.5 * 0.2, abs=1e-6)


def test_stage_one_total_is_infonce_alone() -> None:
    terms = ContrastiveLoss(temperature=0.5)(TEXT_2, AUDIO_2)
    assert terms.total.item() == pytest.approx(0.2987362, abs=1e-6)


def test_temperature_starts_at_007_and_is_learned_as_its_log() -> None:
    loss = ContrastiveLoss()
    assert loss.temperature.item() == pytest.approx(0.07, rel=1e-6)
    assert loss.log_temperature.item() == pytest.approx(math.log(0.07), rel=1e-6)

    loss(TEXT_3, AUDIO_3).total.backward()

    assert loss.log_temperature.grad is not None and loss.log_temperature.grad.item() != 0


def test_separable_pairs_drive_the_temperature_down_to_its_clamp() -> None:
    # Similarities 0.5 on the diagonal, 0.3 elsewhere: each text is nearest its own audio in both directions,
    # so a sharper softmax always lowers the loss.
    loss = ContrastiveLoss(temperature=0.07, min_temperature=0.05)
    optimizer = torch.optim.SGD(loss.parameters(), lr=1.0)
    temperatures = []
    for _ in range(30):
        optimizer.zero_grad()
        loss(TEXT_3, 0.3 + 0.2 * TEXT_3).total.backward()
        optimizer.step()
        temperatures.append(loss.temperature.item())

    assert temperatures[0] < 0.07
    assert temperatures[-1] == pytest.approx(0.05, rel=1e-6)


def test_temperature_is_clamped_at_both_bounds() -> None:
    loss = ContrastiveLoss(min_temperature=0.01, max_temperature=1.0)
    with torch.no_grad():
        loss.log_temperature.fill_(math.log(1e-4))
    assert loss.temperature.item() == pytest.approx(0.01, rel=1e-6)
    with torch.no_grad():
        loss.log_temperature.fill_(math.log(50.0))
    assert loss.temperature.item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": 0.001}, "min_temperature"),
    ({"temperature": 2.0}, "max_temperature"),
    ({"mse_weight": -1.0}, "mse_weight"),
])
def test_invalid_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContrastiveLoss(**kwargs)
