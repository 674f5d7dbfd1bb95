"""CEUSegNet and its variants: shapes, gradients, paper size, CSA/CFF behaviour."""

import pytest
import torch

from ceuspipe.model import VARIANTS, build_model, count_macs, count_parameters
from ceuspipe.model.attention import CSA
from ceuspipe.model.fusion import CFF

torch.set_num_threads(1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_odd_size_forward_backward(variant):
    torch.manual_seed(0)
    model = build_model(variant, width=0.125)
    ceus = torch.rand(2, 1, 37, 51)
    us = torch.rand(2, 1, 37, 51)
    out = model(ceus, us)
    assert out.shape == (2, 1, 37, 51)
    out.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_shape_97x131(variant):
    model = build_model(variant, width=0.0625).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 97, 131), torch.rand(1, 1, 97, 131))
    assert out.shape == (1, 1, 97, 131)
    assert torch.isfinite(out).all()


def test_single_branch_ignores_other_input():
    torch.manual_seed(0)
    for variant, kept in (("ceus_only", 0), ("us_only", 1)):
        model = build_model(variant, width=0.125).eval()
        a, b, c = (torch.rand(1, 1, 32, 32) for _ in range(3))
        with torch.no_grad():
            if kept == 0:
                assert torch.equal(model(a, b), model(a, c))
                assert not torch.equal(model(a, b), model(c, b))
            else:
                assert torch.equal(model(b, a), model(c, a))


def test_full_uses_both_inputs():
    torch.manual_seed(0)
    model = build_model("full", width=0.125).eval()
    a, b, c = (torch.rand(1, 1, 32, 32) for _ in range(3))
    with torch.no_grad():
        assert not torch.allclose(model(a, b), model(a, c))
        assert not torch.allclose(model(a, b), model(c, b))


def test_paper_size():
    model = build_model("full", width=1.0)
    params = count_parameters(model)
    assert abs(params / 9.28e6 - 1) < 0.01, params
    macs = count_macs(model, 128)
    assert abs(macs / 12.7e9 - 1) < 0.02, macs
    assert abs(macs / 12.65e9 - 1) < 0.01, macs


def test_width_scales_channels():
    model = build_model("full", width=0.125)
    assert model.widths == (8, 8, 16, 32, 32)
    assert 0.12e6 < count_parameters(model) < 0.18e6


def test_variant_sizes_ordered():
    n = {v: count_parameters(build_model(v, 0.25)) for v in VARIANTS}
    assert n["ceus_only"] == n["us_only"] < n["both"] < n["both_csa"] < n["full"]
    assert n["both"] < n["both_cff"] < n["full"]
    assert n["unet"] < n["both"]  # no residual shortcuts


def test_unknown_variant_and_bad_width():
    with pytest.raises(ValueError, match="unknown variant"):
        build_model("resnet")
    with pytest.raises(ValueError):
        build_model("full", width=0)


def test_csa_formula():
    torch.manual_seed(0)
    csa = CSA(8)
    fc, fu = torch.rand(2, 8, 5, 5), torch.rand(2, 8, 5, 5)
    w = torch.softmax((fc.mean((2, 3)) @ csa.w_ceus.weight.T) * (fu.mean((2, 3)) @ csa.w_us.weight.T), 1)
    assert torch.allclose(csa.weights(fc, fu).sum(1), torch.ones(2))
    assert torch.allclose(csa(fc, fu), fc + w[:, :, None, None] * fc, atol=1e-6)


def test_cff_shapes_and_dilations():
    cff = CFF(16)
    assert [b[0].dilation for b in cff.branches] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert all(b[0].out_channels == 4 for b in cff.branches)
    assert cff(torch.rand(1, 16, 9, 11), torch.rand(1, 16, 9, 11)).shape == (1, 16, 9, 11)
    with pytest.raises(ValueError):
        CFF(6)
