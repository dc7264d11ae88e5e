"""attention.py: window attention by each kind against the plain path, forward and backward, the choice per
device and case, and its custom gradients (tests/test_cuda.py: the CUDA kinds on a GPU)."""
import pytest
import torch
import torch.nn.functional as F

import attention
import windows
from model import create_model
from utils import UserError


def attention_run(kind: str, version: int, device="cpu", dtype=None, size=72):
    """Logits and parameter gradients of the micro variant with window attention computed by `kind`
    (under autocast to `dtype` when given); the same weights and input for every kind."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=3, version=version, drop_path_rate=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    net.to(device)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3)).to(device)
    with attention.forced(kind), torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
        out = net(x).float()
    out.square().sum().backward()
    return out, {n: p.grad.float() for n, p in net.named_parameters()}


@pytest.mark.parametrize("version", [1, 2])
def test_fused_and_plain_attention_agree_in_training(version):
    """The fused path gives the plain path's outputs and gradients (FlexAttention has no backward on a
    CPU: tests/test_cuda.py checks it on a GPU)."""
    out_a, grads_a = attention_run("plain", version)
    out_b, grads_b = attention_run("sdpa", version)
    assert torch.allclose(out_a, out_b, atol=1e-5)
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4), name


def test_attention_choice():
    x = torch.zeros(2, 3)
    assert attention.choose_attention(x, 0.0) == "sdpa"  # no gradient: inference
    assert attention.choose_attention(x.requires_grad_(), 0.0) == "plain"  # training on a CPU
    with attention.forced("flex"):
        assert attention.choose_attention(x, 0.0) == "flex"
        assert attention.choose_attention(x, 0.1) == "sdpa"  # FlexAttention has no dropout
    with attention.forced("fast"), pytest.raises(UserError, match="unknown attention 'fast'"):
        attention.choose_attention(x, 0.0)
    assert attention.ATTENTION is None  # as it was
    x = torch.zeros(2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the compute type's entry first: bf16 inference on a CPU
        assert attention.choose_attention(x, 0.0) == "plain"
        assert attention.choose_attention(x.requires_grad_(), 0.0) == "plain"
    assert attention.choose_attention(torch.zeros(2, 3, dtype=torch.bfloat16), 0.0) == "plain"  # a bf16 model
    with torch.autocast("cpu", dtype=torch.float16):  # no entry of its own: the device's
        assert attention.choose_attention(torch.zeros(2, 3), 0.0) == "sdpa"


def custom_functions() -> list:
    """(function, its float64 inputs) for each custom autograd Function: V2's normalisation, the token gather, the
    head split (2 heads of 3 channels)."""
    x = torch.randn(2, 3, 5, 4, dtype=torch.double, requires_grad=True)
    scale = torch.rand(3, 1, 1, dtype=torch.double, requires_grad=True)
    rows = torch.randn(12, 3, dtype=torch.double, requires_grad=True)
    index = torch.randperm(12)
    inverse = torch.empty_like(index).scatter_(0, index, torch.arange(12))
    qkv = torch.randn(4, 5, 3 * 2 * 3, dtype=torch.double, requires_grad=True)
    return [(attention._ScaledNormalize.apply, (x, scale)), (windows._GatherTokens.apply, (rows, index, inverse)),
            (lambda t: attention._SplitHeads.apply(t, 2), (qkv,))]


def test_custom_gradients_are_exact():
    functions = custom_functions()
    for function, inputs in functions:
        assert torch.autograd.gradcheck(function, inputs)
    qkv = functions[-1][1][0]
    split = attention.split_heads(qkv.detach(), 2)
    assert all(torch.equal(a, b) for a, b in zip(attention._SplitHeads.apply(qkv, 2), split))


def test_custom_gradients_differentiate_twice():
    """A backward that builds a graph (a gradient penalty, a Hessian-vector product, MAML): V2's normalisation
    differentiated its saved 1 / ||x|| as a constant, its second derivatives some 9% off in a stage's."""
    for function, inputs in custom_functions():
        assert torch.autograd.gradgradcheck(function, inputs)


def test_v2_normalised_q_and_k_come_out_in_their_own_type_rounded_once():
    """Under autocast V2's cosine-attention normalisation computes in float32 (the norm too, which CPU's autocast
    left in bf16) and writes q's type (bf16): the float32 result rounded once, what the matmul that takes it would
    have cast it to."""
    x = torch.randn(2, 3, 5, 8).bfloat16().requires_grad_()
    scale = torch.rand(3, 1, 1) + 1
    with torch.autocast("cpu", torch.bfloat16):
        out = attention.scaled_normalize(x, scale)
        factor = x.detach().float().norm(dim=-1, keepdim=True).reciprocal() * scale  # the norm in float32
    assert factor.dtype == torch.float32
    assert out.dtype == torch.bfloat16 and torch.equal(out, (x.detach().float() * factor).bfloat16())


def test_sdpa_runs_many_windows_in_chunks(monkeypatch):
    """More windows than CUDA's kernel takes at once (attention.SDPA_MAX_WINDOWS) go in chunks of
    whole images' windows, with the plain path's outputs and gradients."""
    out_a, grads_a = attention_run("plain", 1)
    sdpa, sizes = F.scaled_dot_product_attention, []
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda q, *a, **kw: sizes.append(len(q)) or sdpa(q, *a, **kw))
    monkeypatch.setattr(attention, "SDPA_MAX_WINDOWS", 30)
    out_b, grads_b = attention_run("sdpa", 1)
    assert sizes[:2] == [25, 25] and max(sizes) <= 30  # stage 1: 2 images of 25 windows (padded: masked), one each
    assert torch.allclose(out_a, out_b, atol=1e-5)
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4), name
