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


def test_vnet3d_counts_the_parameters_of_its_layers():
    # widths (4, 8), one conv per stage, 3x3x3, batch norm; by hand:
    stem = (4 * 27 + 4) + 2 * 4 + 4                       # conv 1->4, BN, PReLU
    stage8 = (8 * 8 * 27 + 8) + 2 * 8 + 8 + 8             # conv 8->8, BN, PReLU, residual PReLU
    down = (8 * 4 * 8 + 8) + 2 * 8 + 8 + stage8           # strided 2x2x2 conv 4->8, BN, PReLU, stage
    up = (8 * 4 * 8 + 4) + 2 * 4 + 4 + stage8             # transposed 8->4, BN, PReLU; stage at 2 * 4
    head = 8 + 1                                          # 1x1x1 conv 8->1
    net = vnet3d(widths=(4, 8), convs=(1, 1), kernel_size=3)
    assert count_parameters(net) == stem + down + up + head
    assert net(torch.zeros(2, 1, 8, 12, 16)).shape == (2, 1, 8, 12, 16)


def test_vnet3d_default_is_the_papers_network():
    net = vnet3d(in_channels=1, out_channels=2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert {m.kernel_size for m in convs if m.stride == (1, 1, 1)} == {(5, 5, 5), (1, 1, 1)}
    # the paper: 1, 2, 3, 3, 3 convolutions down and 3, 3, 2, 1 up, 16-256 maps
    assert sum(m.kernel_size == (5, 5, 5) for m in convs) == 1 + 2 + 3 + 3 + 3 + 3 + 3 + 2 + 1
    assert max(m.out_channels for m in convs) == 256
    assert any(isinstance(m, torch.nn.PReLU) for m in net.modules())
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


@pytest.mark.parametrize("kwargs, match", [
    ({"widths": (8,), "convs": (1,)}, "two levels"),
    ({"widths": (8, 16), "convs": (1, 1, 1)}, "two levels"),
    ({"widths": (8, 15), "convs": (1, 1)}, "even"),
    ({"kernel_size": 4}, "odd"),
    ({"dropout": 1.0}, "dropout"),
    ({"norm": "group"}, "norm"),
])
def test_vnet3d_rejects_impossible_settings(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        vnet3d(**{"widths": (8, 16), "convs": (1, 1), **kwargs})
