"""HRN's vision blocks: the ResNet regressor, the pix2pix U-Net and the PatchGAN (parameter counts of the reference
architectures, receptive fields, batch invariance, shapes, the zero head, the skip connections, input checks)."""

import pytest
import torch
from torch import nn

from morphable.errors import MorphableError
from morphable.image.resnet import ResNet, ResNetRegressor, resnet_features
from morphable.image.unet import PatchDiscriminator, UNetGenerator, patch_receptive_field


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _settle_batch_norm(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Running statistics other than (0, 1) from a few training passes, then eval mode."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x)
    return net.eval()


def test_parameter_counts_match_the_reference_architectures():
    with torch.device("meta"):  # built, never run: no memory, no time
        assert _parameters(ResNet(18)) == 11_176_512  # torchvision resnet18 (11,689,512) less its fc (513,000)
        assert _parameters(ResNet(34)) == 21_284_672  # resnet34: 21,797,672 - 513,000
        assert _parameters(ResNet(50)) == 23_508_032  # resnet50: 25,557,032 - 2,049,000
        unet = UNetGenerator(3, 3, 8, 64, "batch")
        patch = PatchDiscriminator(6, 64, 3, "batch")
    # pix2pix unet_256 with BatchNorm has 54,413,955 ("54.414 M"): no bias on any convolution but the output one.
    # Ours adds the biases of the two encoder convolutions that no norm follows: the first (64) and the innermost (512)
    assert _parameters(unet) == 54_413_955 + 64 + 512
    assert unet.encoder[0][0].bias.numel() == 64 and unet.encoder[-1][0].bias.numel() == 512
    assert [isinstance(block[-1], nn.Dropout) for block in unet.decoder] == [True] * 3 + [False] * 4
    assert _parameters(patch) == 2_768_705  # pix2pix basic (70x70) discriminator on [input, output] pairs
    assert resnet_features(18) == 512 and resnet_features(50) == 2048 and resnet_features(50, 8) == 256


@pytest.mark.parametrize("layers, side", [(1, 64), (2, 64), (3, 128)])
def test_patch_receptive_field_measured_by_gradients_equals_the_formula(layers, side):
    torch.manual_seed(layers)
    net = _settle_batch_norm(PatchDiscriminator(2, 4, layers), torch.randn(2, 2, side, side))
    x = torch.randn(1, 2, side, side, requires_grad=True)
    logits = net(x)
    assert logits.shape == (1, 1, side // 2 ** layers - 2, side // 2 ** layers - 2)
    centre = logits.shape[-1] // 2
    logits[0, 0, centre, centre].backward()
    reached = x.grad.abs().sum(1)[0] > 0  # LeakyReLU and eval-mode BatchNorm pass a non-zero gradient everywhere
    rows, cols = reached.any(1).nonzero().squeeze(1), reached.any(0).nonzero().squeeze(1)
    assert 0 < rows[0] and rows[-1] < side - 1 and 0 < cols[0] and cols[-1] < side - 1  # inside: no padding seen
    extent = patch_receptive_field(layers)
    assert rows[-1] - rows[0] + 1 == extent and cols[-1] - cols[0] + 1 == extent
    assert reached.sum() == extent ** 2  # a full square: 4x4 kernels at stride <= 2 leave no holes
    assert [patch_receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]


def test_eval_outputs_of_a_batch_equal_those_of_each_sample():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    regressor = ResNetRegressor(7, depth=18, width=8)
    nn.init.normal_(regressor.head.weight)  # the zero head would make the comparison trivial
    nn.init.normal_(regressor.head.bias)
    unet = UNetGenerator(3, 2, 5, width=8)
    for net in (_settle_batch_norm(regressor, images), _settle_batch_norm(unet, images)):
        with torch.no_grad():
            batched = net(images)
            single = torch.cat([net(images[k:k + 1]) for k in range(3)])
        assert batched.abs().max() > 1e-3
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_output_shapes(depth):
    torch.manual_seed(0)
    regressor = ResNetRegressor(5, depth=depth, in_channels=4, width=4).eval()
    with torch.no_grad():
        assert regressor(torch.rand(2, 4, 32, 32)).shape == (2, 5)
        assert regressor.backbone(torch.rand(2, 4, 40, 40)).shape == (2, resnet_features(depth, 4))
        for norm in ("batch", "instance"):
            unet = UNetGenerator(3, 5, 4, width=4, norm=norm).eval()
            assert unet(torch.rand(2, 3, 32, 48)).shape == (2, 5, 32, 48)
            patch = PatchDiscriminator(5, 4, 3, norm).eval()
            assert patch(torch.rand(2, 5, 64, 80)).shape == (2, 1, 6, 8)
    with pytest.raises(MorphableError, match="depth"):
        ResNet(101)


def test_bottleneck_strides_on_its_3x3_and_convolutions_start_kaiming_normal():
    from morphable.image.resnet import Bottleneck

    block = Bottleneck(8, 4, stride=2)
    body = [(m.kernel_size, m.stride) for m in block.body.modules() if isinstance(m, nn.Conv2d)]
    assert body == [((1, 1), (1, 1)), ((3, 3), (2, 2)), ((1, 1), (1, 1))]  # "v1.5": no 1x1 skipping odd pixels
    assert block(torch.rand(1, 8, 8, 8)).shape == (1, 16, 4, 4)
    torch.manual_seed(0)
    net = ResNet(18, width=16)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        out_channels, _, k, _ = conv.weight.shape
        assert conv.weight.std().item() == pytest.approx((2 / (k * k * out_channels)) ** 0.5, rel=0.1)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(norms) == 20 and all((m.weight == 1).all() and (m.bias == 0).all() for m in norms)
    assert all(conv.bias is None for conv in convs)


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_the_generator_and_discriminator_train_with_dropout_active(norm):
    torch.manual_seed(0)
    unet, patch = UNetGenerator(3, 2, 4, width=4, norm=norm).train(), PatchDiscriminator(5, 4, 2, norm).train()
    x = torch.rand(2, 3, 32, 32)
    fake = unet(x)
    assert not torch.equal(fake, unet(x))  # dropout at training time (the noise of pix2pix)
    assert fake.abs().max() < 1  # tanh
    patch(torch.cat([x, fake], dim=1)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.parameters())
    assert UNetGenerator(3, 2, 4, width=4, norm=norm, dropout=False).train()(x).shape == fake.shape


def test_the_untrained_regressor_predicts_zero_and_one_step_moves_it():
    torch.manual_seed(0)
    regressor = ResNetRegressor(6, depth=18, width=4)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert (regressor.eval()(images) == 0).all()
    optimiser = torch.optim.SGD(regressor.parameters(), lr=0.1)
    loss = (regressor.train()(images) - torch.ones(2, 6)).square().mean()
    loss.backward()
    assert regressor.head.weight.grad.abs().sum() > 0 and regressor.head.bias.grad.abs().sum() > 0
    # behind a zero head the backbone gets no gradient on the first step
    assert all((p.grad is None or (p.grad == 0).all()) for p in regressor.backbone.parameters())
    optimiser.step()
    with torch.no_grad():
        moved = regressor.eval()(images)
    # dL/db = sum_b 2 (0 - 1) / 12 = -1/3, so b = 0.1 / 3; W = (0.1 / 6) sum_b f_b >= 0 on features f >= 0 (ReLU)
    torch.testing.assert_close(regressor.head.bias, torch.full((6,), 0.1 / 3))
    assert (moved >= 0.1 / 3 - 1e-6).all() and (moved > 0.1 / 3).any()  # towards the target of one


def test_unet_skip_connections_carry_the_input_at_full_resolution():
    torch.manual_seed(0)
    unet = UNetGenerator(3, 2, 4, width=8, output="none")
    _settle_batch_norm(unet, torch.rand(2, 3, 32, 32))
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    unet(x)[0, :, 0, 0].sum().backward()
    assert (x.grad.abs().sum(1)[0, :3, :3] > 0).all()  # the corner output sees the corner input
    # cut the second encoder level: everything below the outermost skip becomes a constant of the input
    nn.init.zeros_(unet.encoder[1][0].weight)
    x.grad = None
    unet(x)[0, :, 0, 0].sum().backward()
    reached = x.grad.abs().sum(1)[0] > 0
    assert reached[:3, :3].all() and reached.sum() == 9  # conv 4x4 / 2 then transposed conv 4x4 / 2: a 3x3 corner
    with torch.no_grad():
        poked = x.detach().clone()
        poked[0, :, 10, 10] += 1.0
        changed = (unet(poked) - unet(x)).abs().sum(1)[0] > 0
    assert changed[10, 10] and changed[7:13, 7:13].sum() == changed.sum()  # one pixel moves a 6x6 window around it


def test_bad_sizes_and_options_raise_one_line_errors():
    unet = UNetGenerator(3, 3, 5, width=4)
    with pytest.raises(MorphableError, match="divisible by 32, got 48 x 64") as error:
        unet(torch.rand(1, 3, 48, 64))
    assert "\n" not in str(error.value)
    for bad in (dict(norm="group"), dict(output="sigmoid"), dict(downs=0)):
        with pytest.raises(MorphableError) as error:
            UNetGenerator(**{"in_channels": 3, "out_channels": 3, "downs": 5, "width": 4, **bad})
        assert "\n" not in str(error.value)
    with pytest.raises(MorphableError, match="norm"):
        PatchDiscriminator(3, norm="layer")
