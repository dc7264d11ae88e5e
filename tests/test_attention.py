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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_short_rows_on_a_cpu_softmax_in_float32_to_the_same_values(monkeypatch, dtype):
    """Windows of 4 (16 tokens) in bf16 or fp16 on a CPU: the scores go through the float32 softmax, which the
    reduced type's kernel runs as scalar code for rows this short; the output and gradients are those of the
    reduced type's kernel, within its rounding, and in its type."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(8, 2, 16, 8).to(dtype).requires_grad_() for _ in range(3))
    bias, mask = torch.randn(2, 16, 16), torch.where(torch.rand(4, 16, 16) < 0.2, windows.MASKED, 0.0)

    def run(min_row):
        monkeypatch.setattr(attention, "CPU_REDUCED_SOFTMAX_MIN_ROW", min_row)
        out = attention.window_attention(q, k, v, bias, mask, 0.0, "plain", scale=0.35)
        grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
        return out, grads

    out_float32, grads_float32 = run(32)
    out_reduced, grads_reduced = run(0)  # every row through the reduced type's own kernel, as before
    assert out_float32.dtype == dtype and all(g.dtype == dtype for g in grads_float32)
    tolerance = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=2e-3, rtol=2e-3)
    assert torch.allclose(out_float32.float(), out_reduced.float(), **tolerance)
    for a, b in zip(grads_float32, grads_reduced):
        assert torch.allclose(a.float(), b.float(), **tolerance)
    reference = torch.softmax(0.35 * q.double() @ k.double().transpose(-2, -1)
                              + (bias.double() + mask.double().unsqueeze(1)).repeat(2, 1, 1, 1), -1) @ v.double()
    assert torch.allclose(out_float32.double(), reference, **tolerance)


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
