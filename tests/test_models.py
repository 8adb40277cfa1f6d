"""bonelab.models: shapes, parameter counts and argument checks of the network factories."""

import pytest
import torch

from bonelab.errors import InvalidArgumentError
from bonelab.models import count_parameters, unet2d, vnet3d


def test_count_parameters_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(4, 2))
    assert count_parameters(net) == (4 * 9 + 4) + (4 * 2 + 2)
    net[0].requires_grad_(False)
    assert count_parameters(net) == 10
    assert count_parameters(net, trainable_only=False) == 50


def test_unet2d_maps_images_to_logits_of_the_same_size():
    net = unet2d(in_channels=2, out_channels=5, channels=(4, 8, 16), num_res_units=1)
    out = net(torch.randn(3, 2, 32, 48))
    assert out.shape == (3, 5, 32, 48)
    assert out.dtype == torch.float32
    # more levels and residual units mean more parameters; the default is the book's 1.6 M net
    small = count_parameters(unet2d(channels=(4, 8), num_res_units=0))
    assert small < count_parameters(net) < count_parameters(unet2d()) == 1_628_345


def test_unet2d_rejects_a_single_level():
    with pytest.raises(InvalidArgumentError, match="two levels"):
        unet2d(channels=(16,))


def test_vnet3d_is_monais_full_size_vnet():
    net = vnet3d(in_channels=1, out_channels=3)
    assert count_parameters(net) == pytest.approx(45.6e6, rel=0.01)
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    with pytest.raises(InvalidArgumentError, match="divide 16"):
        vnet3d(in_channels=3)
