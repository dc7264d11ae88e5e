"""Window attention, four ways to compute the same thing, and the choice among them per device and case.

    softmax(q k^T + bias + mask) v, for every window of a batch at once

`plain` (matmul, softmax, matmul) is the reference the others are tested against; `sdpa` is
F.scaled_dot_product_attention with the bias and mask expanded to every window; `flex` is
FlexAttention, CUDA's generated kernel that reads bias and mask by index; `triton` is kernels.py's
kernel of our own, a window and head per program, for windows of up to 64 tokens on CUDA. model.py's
WindowAttention computes q, k, v (split_heads), V2's normalised q and k (scaled_normalize), the
position bias and the shift mask, and calls window_attention. bench/bench_attention.py times the
four; tests/test_attention.py and tests/test_cuda.py hold them to `plain`. split_heads and
scaled_normalize have backward passes of their own, leaner than autograd's.
"""
import contextlib

import torch
import torch.nn.functional as F

import kernels
from utils import UserError

# A kind here forces it everywhere (tests, benchmarks); None lets choose_attention pick per call.
ATTENTION = None
ATTENTION_KINDS = ("plain", "sdpa", "flex", "triton")
# sdpa runs at most this many windows at once in training: CUDA's memory-efficient kernel takes 65535
# along the batch, and past that its backward with a bias fails (torch 2.11 on an H200: swin_tiny at batch
# 2097, 134208 windows in stage 1, "size of tensor a (134208) must match ... b (65535)";
# pytorch/pytorch#142228).
SDPA_MAX_WINDOWS = 65535

# The kind None picks, per device and case, from bench/bench_attention.py's figures. On a CPU: the
# fused kernel wherever no gradient is needed, plain in training, where the fused backward with a
# bias that needs a gradient takes a slower path. On CUDA (an H200, swin_tiny, bf16, batch 128, eager,
# whole model, 2026-11-28, img/s): for inference kernels.py's triton (8518; plain 7613, sdpa 6081, flex
# 4321; alone at stage 1's shape 0.56 ms against plain's 0.78); in training plain (2886; triton 2574,
# sdpa 2566, flex 1925), where triton's lead alone (1.65 ms against 2.42) did not hold in the whole
# step: bench_train.py gave it 2646 against plain's 2543 eager, 3649 against 3774 compiled. triton is
# taken only outside torch.compile (compiled inference is untimed) and where kernels.attention_runs.
# A key with a compute type (autocast's, else the input's) overrides the device's own for that type. On a CPU in
# bf16, inference takes plain: the attention of swin_tiny's twelve blocks alone (batch 8) took 62 ms a pass where
# sdpa's CPU kernel took 77; the whole model ran 1.08x timm's where sdpa's ran 1.05x (25 rounds), swinv2_tiny's
# 1.01x against 1.00x (15), both with kernels.py's bf16 oneDNN linears (timed side by side as bench/bench_model.py
# times them; 2-core AMD EPYC Zen 4, 2026-12-01). fp32 keeps sdpa.
# A CPU's softmax in bf16 or fp16 converts a row to float32 a vector (32 values with AVX-512) at a time and does
# the rest one value at a time, forward and backward: rows shorter than a vector, the micro variant's windows of 4
# (16 tokens), run scalar code throughout, 2.5-4x slower than the float32 kernel, whose output then rounds to the
# same values (0.60 ms against 0.25 forward, 1.67 against 0.41 with backward, at stage 1's shape in the demo: batch
# 16, 1024 windows; 2-core AMD EPYC Zen 4, 2026-12-01). At windows of 7 (49 tokens: a vector and a scalar tail)
# neither is clearly ahead with train.py's heap reuse (swin_tiny's stage 1 at batch 64: float32 1.0-1.4x forward,
# 0.96-1.25x with backward); from 64 tokens the bf16 kernel is (1.5-2.4x with backward), and 49 keeps it too.
CPU_REDUCED_SOFTMAX_MIN_ROW = 32
CHOSEN_ATTENTION = {("cpu", "training"): "plain", ("cpu", "inference"): "sdpa",
                    ("cpu", "inference", torch.bfloat16): "plain",
                    ("cuda", "training"): "plain", ("cuda", "inference"): "triton"}


@contextlib.contextmanager
def forced(kind: str):
    """ATTENTION set to kind for a while (an export's trace), then as it was."""
    global ATTENTION
    saved, ATTENTION = ATTENTION, kind
    try:
        yield
    finally:
        ATTENTION = saved


def choose_attention(x: torch.Tensor, dropout: float) -> str:
    """ATTENTION when set, else the measured choice for this device, case and compute type. FlexAttention has no
    dropout: with attention dropout it gives way to sdpa; kernels.py's has none either, and gives way to
    plain there and wherever it does not run (kernels.fused_attention_applies); chosen rather than forced,
    also under torch.compile and where it failed to build (kernels.attention_runs)."""
    kind, chosen = ATTENTION, ATTENTION is None
    if chosen:
        device = x.device.type
        case = "training" if torch.is_grad_enabled() and x.requires_grad else "inference"
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        kind = CHOSEN_ATTENTION.get((device, case, dtype), CHOSEN_ATTENTION.get((device, case), "sdpa"))
    if kind not in ATTENTION_KINDS:
        raise UserError(f"unknown attention {kind!r}: choose one of {', '.join(ATTENTION_KINDS)}")
    if kind == "triton" and (dropout > 0 or not kernels.fused_attention_applies(x) or chosen and (
            torch.compiler.is_compiling() or not kernels.attention_runs(x.device))):
        return "plain"
    return "sdpa" if kind == "flex" and dropout > 0 else kind


def window_attention(q, k, v, bias, mask, dropout: float, kind: str, scale: float = 1.0) -> torch.Tensor:
    """softmax(scale q k^T + bias + mask) v for every window: q, k, v (B_, heads, N, d), B_ = batch x windows
    with the window index fastest; bias (heads, N, N); mask (num_windows, N, N) or None. The fused
    kernels apply the scale inside, sparing a pass over q forward and backward."""
    b_, heads, n, _ = q.shape
    if kind == "flex":
        return flex_window_attention(q, k, v, bias, mask, scale)
    if kind == "triton":
        return kernels.window_attention(q, k, v, bias, mask, scale)
    if mask is not None:
        bias = bias + mask.unsqueeze(1)  # (num_windows, heads, N, N)
    nw = 1 if mask is None else mask.shape[0]
    if kind == "sdpa":
        # cast before expanding: one copy, in the compute type (v's: V2's normalised q comes out in
        # float32 under autocast without a gradient, which would then cast a float32 copy once more);
        # a 4-D mask keeps the CPU's flash kernel (a 3-D one falls back to the slow path)
        bias = bias.to(v.dtype)
        bias = bias.expand(b_ // nw, nw, heads, n, n).reshape(b_, heads, n, n) if nw > 1 else bias.view(1, heads, n, n)
        # the size test after the gradient's and the export's: an exported program (which has no backward pass, even
        # traced with gradients on) keeps its batch and size dynamic, rather than refusing over 65535 windows
        if torch.is_grad_enabled() and q.requires_grad and not torch.compiler.is_exporting() and b_ > SDPA_MAX_WINDOWS:
            step = SDPA_MAX_WINDOWS // nw * nw  # whole images' windows, so that each chunk's bias lines up
            return torch.cat([F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step],
                                                             attn_mask=bias[i:i + step] if nw > 1 else bias,
                                                             dropout_p=dropout, scale=scale)
                              for i in range(0, b_, step)])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=scale)
    attn = (q * scale if scale != 1.0 else q) @ k.transpose(-2, -1)  # (B_, heads, N, N); q is smaller than attn
    # In attn's own type: under autocast, bf16 or fp16, which softmax computes in float32 inside and
    # writes back, as fused attention kernels do. Left to autocast, the float32 bias would make the
    # sum float32, softmax would write float32, and the second matmul would cast it back: 24 bytes
    # moved per score forward and 32 backward, where this moves 12 and 12 (bench/bench_traffic.py).
    with torch.autocast(q.device.type, enabled=False):
        attn = attn.view(-1, nw, heads, n, n) + bias.to(attn.dtype)
        reduced = attn.dtype in (torch.bfloat16, torch.float16)
        if reduced and q.device.type == "cpu" and n < CPU_REDUCED_SOFTMAX_MIN_ROW:
            attn = attn.softmax(-1, dtype=torch.float32).to(attn.dtype)  # the same values, the float32 kernel's speed
        else:
            attn = attn.softmax(-1)
    return F.dropout(attn, dropout, dropout > 0).view(b_, heads, n, n) @ v


_compiled_flex = None


def flex_window_attention(q, k, v, bias, mask, scale: float = 1.0) -> torch.Tensor:
    """FlexAttention: bias and mask are read by index inside one generated kernel, so nothing of size
    (B_, heads, N, N) is written, and the bias's gradient is summed there too."""
    from torch.nn.attention.flex_attention import flex_attention
    global _compiled_flex
    q, k = q.to(v.dtype), k.to(v.dtype)  # V2's normalised q, k: float32 under autocast without a gradient
    if mask is None:
        def score_mod(score, b, h, i, j):
            return score + bias[h, i, j]
    else:
        nw = mask.shape[0]

        def score_mod(score, b, h, i, j):
            return score + bias[h, i, j] + mask[b % nw, i, j]
    attend = flex_attention
    if q.is_cuda and not torch.compiler.is_compiling():
        # outside a compiled model FlexAttention needs its own compile (eagerly it is a slow reference);
        # one entry per stage, window shift and grad mode: more than the default limit of 8
        if _compiled_flex is None:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        attend = _compiled_flex
    return attend(q, k, v, score_mod=score_mod, scale=scale)


# --- Into the heads, and V2's cosine attention: leaner backward passes than autograd's ---

class _ScaledNormalize(torch.autograd.Function):
    """scale * x / ||x|| over the last dim (V2's cosine attention with its temperature).

    The backward is four passes over x, where autograd's chain of norm, clamp, divide and
    multiply takes about ten; it is the V2 attention's largest cost after the matmuls. The result
    is in x's type, computed in float32 and rounded once: under autocast the norm is float32, and
    a float32 result would only be cast to bf16 by the matmul that takes it.
    """

    @staticmethod
    def forward(ctx, x, scale):
        inv_norm = inverse_norm(x)
        ctx.save_for_backward(x, inv_norm, scale)
        return torch.mul(x, inv_norm * scale, out=torch.empty_like(x))

    @staticmethod
    def backward(ctx, grad):
        x, inv_norm, scale = ctx.saved_tensors
        if torch.is_grad_enabled():  # a backward that builds a graph (create_graph: a gradient penalty, a Hessian-
            inv_norm = inverse_norm(x)  # vector product) differentiates 1 / ||x|| too, which the saved one hides
        y = x * inv_norm
        dot = (y * grad).sum(-1, keepdim=True)
        # d(scale * y)/dx = scale / ||x|| * (I - y y^T)
        grad_x = torch.addcmul(grad, y, dot, value=-1).mul_(inv_norm * scale)
        grad_scale = dot.sum_to_size(scale.shape) if ctx.needs_input_grad[1] else None
        return grad_x, grad_scale


def scaled_normalize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # not in torch.export, which traces the Function's forward with gradients on, where its out= is refused
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad) and not torch.compiler.is_exporting() \
            and not torch._C._are_functorch_transforms_active():  # torch.func (grad, vmap) takes plain ops
        return _ScaledNormalize.apply(x, scale)
    return (x * (inverse_norm(x) * scale)).to(x.dtype)


def inverse_norm(x: torch.Tensor) -> torch.Tensor:
    """1 / ||x|| over the last dim, clamped as F.normalize clamps it, in float32 at least whatever x's type (as
    CUDA's autocast computes a norm; CPU's computed it in bf16): in float16 (a model cast with .half()) the clamp's
    1e-12 is 0, and a key of zeros (V2's keys have no bias: padding, or a zero pixel after a ReLU) made inf * 0 =
    NaN, every output NaN."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64 (gradcheck's)
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=dtype).clamp_min(1e-12).reciprocal()


def _heads_view(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """(B_, N, 3C) -> (3, B_, heads, N, d), a view."""
    b_, n, c3 = qkv.shape
    return qkv.view(b_, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)


class _SplitHeads(torch.autograd.Function):
    """(B_, N, 3C) -> q, k, v, each (B_, heads, N, d), contiguous, in one copy; their gradients are written
    straight back into (B_, N, 3C). Left to autograd (permuted views that each matmul copies), the
    backward stacks the three gradients and copies the stack once more."""

    @staticmethod
    def forward(ctx, qkv, heads):
        return _heads_view(qkv, heads).contiguous().unbind(0)

    @staticmethod
    def backward(ctx, dq, dk, dv):
        b_, heads, n, d = dq.shape
        grad = dq.new_empty(b_, n, 3, heads, d)
        for i, g in enumerate((dq, dk, dv)):
            grad[:, :, i].copy_(g.transpose(1, 2))
        return grad.view(b_, n, 3 * heads * d), None


def split_heads(qkv: torch.Tensor, heads: int):
    """(B_, N, 3C) -> q, k, v, each (B_, heads, N, d)."""
    if torch.is_grad_enabled() and qkv.requires_grad and not torch._C._are_functorch_transforms_active():
        return _SplitHeads.apply(qkv, heads)
    return _heads_view(qkv, heads).unbind(0)  # views: plain in exports
