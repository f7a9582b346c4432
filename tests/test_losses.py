import torch

from medrestore.training.losses import channel_weighted_mse, charbonnier, make_loss, mse


def test_green_weighted_mse_weights_channels_1_3_2():
    pred = torch.zeros(1, 3, 4, 4)
    loss = channel_weighted_mse([1, 3, 2])
    for ch, w in enumerate([1, 3, 2]):
        target = torch.zeros(1, 3, 4, 4)
        target[:, ch] = 1.0
        assert torch.isclose(loss(pred, target), torch.tensor(w / 6))


def test_weighted_mse_with_equal_weights_is_mse():
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert torch.isclose(channel_weighted_mse([1, 1, 1])(a, b), mse(a, b))


def test_charbonnier_is_near_l1_for_large_errors():
    a, b = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert torch.isclose(charbonnier(a, b), torch.tensor(1.0), atol=1e-5)
    assert torch.isclose(make_loss("l1")(a, b), torch.tensor(1.0))
