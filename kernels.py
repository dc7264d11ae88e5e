"""LayerNorm for CUDA training as one Triton kernel each way, where PyTorch's own takes longer than its bytes need.

The H200 profile (README, Training on a GPU) had LayerNorm forward and backward at 18% of an eager
swin_tiny step's kernel time, the forward 4.9 ms a step where the bytes of its 29 calls need about
0.9 ms at the card's bandwidth. Swin's rows are many and short: 401,408 rows of 96 channels
in stage 1 at batch 128, 1536 channels at most. Here a program normalises a block of rows at a time,
and in backward each program also sums its rows' share of the weight and bias gradients as it goes,
written once per program and summed across programs by one small reduction: the activations are
read once each way, and the sums come out the same on every run (no atomics).

LAYER_NORM picks: "torch" (F.layer_norm) or "triton" (these kernels). They serve model.LayerNorm in
training on CUDA only: a tensor that needs a gradient, outside torch.compile (which fuses LayerNorm
itself); inference and exports take F.layer_norm. Until bench/bench_train.py --layer-norm torch triton
has timed both on a GPU, "torch" is the default (made the default, it must give way to F.layer_norm
where Triton cannot build its launcher, which takes a C compiler, as engine.inductor_or_eager does for
torch.compile). The tests run the kernels on the CPU through Triton's interpreter (TRITON_INTERPRET=1,
read when triton is imported: tests/test_kernels.py runs a subprocess).
"""
from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch

LAYER_NORM = "torch"
LAYER_NORM_KINDS = ("torch", "triton")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # kernels run on CPU tensors, in numpy: for tests
triton = tl = None  # imported on first use (compiled()): every script imports model.py, and Triton costs 160 ms


def fused_layer_norm_applies(x: torch.Tensor) -> bool:
    """Whether this LayerNorm call goes to the Triton kernels."""
    return (LAYER_NORM == "triton" and x.requires_grad and torch.is_grad_enabled() and (x.is_cuda or INTERPRET)
            and x.numel() > 0 and not torch.compiler.is_compiling() and compiled() is not None)


@functools.lru_cache(maxsize=None)
def compiled():
    """The kernels as Triton JIT functions, or None without Triton (a torch build for a platform
    without it): the first call imports Triton."""
    global triton, tl
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return SimpleNamespace(forward=triton.jit(_forward_kernel), backward=triton.jit(_backward_kernel))


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               out_dtype: torch.dtype) -> torch.Tensor:
    """F.layer_norm over the last dimension, computed in float32 with the float32 affine parameters,
    written in out_dtype; x's gradient comes out in x's type."""
    return _LayerNorm.apply(x, weight, bias, eps, out_dtype)


def _blocks(n: int) -> tuple:
    """(rows per block, columns per block, warps): about 4096 elements a block, a row in one block."""
    block_n = 1 << (n - 1).bit_length()  # the next power of two
    block_m = max(1, 4096 // block_n)
    return block_m, block_n, 8 if block_n >= 1024 else 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def _programs_for_sums(device: torch.device) -> int:
    """Backward's program count: enough to fill the GPU a few times over, few enough that summing
    their partial gradients is small."""
    if device.type != "cuda":
        return 8
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        shape, n = x.shape, x.shape[-1]
        rows = x.reshape(-1, n).contiguous()
        m = rows.shape[0]
        y = torch.empty((m, n), dtype=out_dtype, device=x.device)
        mean = torch.empty(m, dtype=torch.float32, device=x.device)
        rstd = torch.empty(m, dtype=torch.float32, device=x.device)
        block_m, block_n, warps = _blocks(n)
        compiled().forward[(_cdiv(m, block_m),)](rows, weight, bias, y, mean, rstd, m, n, eps,
                                                       BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
        ctx.save_for_backward(rows, weight, mean, rstd)
        ctx.shape = shape
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        rows, weight, mean, rstd = ctx.saved_tensors
        m, n = rows.shape
        dy = dy.reshape(m, n).contiguous()
        dx = torch.empty_like(rows)
        block_m, block_n, warps = _blocks(n)
        # rows per program: a whole number of blocks, so that no two programs share one
        per_program = _cdiv(_cdiv(m, _programs_for_sums(rows.device)), block_m) * block_m
        programs = _cdiv(m, per_program)
        partial_dw = torch.empty((programs, n), dtype=torch.float32, device=rows.device)
        partial_db = torch.empty((programs, n), dtype=torch.float32, device=rows.device)
        compiled().backward[(programs,)](dy, rows, weight, mean, rstd, dx, partial_dw, partial_db, m, n,
                                         per_program, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
        dw = partial_dw.sum(0).to(weight.dtype)
        db = partial_db.sum(0).to(weight.dtype)
        return dx.view(ctx.shape), dw, db, None, None


# The kernels, made Triton JIT functions by compiled(). Their annotations stay text (the __future__ import),
# which Triton reads as it reads tl.constexpr itself: this module imports without Triton.

def _forward_kernel(X, W, B, Y, MEAN, RSTD, M, N, eps, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64: M*N may pass 2**31
    cols = tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    ok = row_ok[:, None] & col_ok[None, :]
    offsets = rows[:, None] * N + cols[None, :]
    x = tl.load(X + offsets, mask=ok, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / N
    centred = tl.where(ok, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / N + eps)
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=ok)
    tl.store(MEAN + rows, mean, mask=row_ok)
    tl.store(RSTD + rows, rstd, mask=row_ok)


def _backward_kernel(DY, X, W, MEAN, RSTD, DX, PARTIAL_DW, PARTIAL_DB, M, N, rows_per_program,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    first = program.to(tl.int64) * rows_per_program
    for start in range(0, rows_per_program, BLOCK_M):
        rows = first + start + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        ok = row_ok[:, None] & col_ok[None, :]
        offsets = rows[:, None] * N + cols[None, :]
        x = tl.load(X + offsets, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(DY + offsets, mask=ok, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=row_ok, other=0.0)
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        x_hat = tl.where(ok, (x - mean[:, None]) * rstd[:, None], 0.0)
        w_dy = w[None, :] * dy
        # dx = rstd * (w dy - mean(w dy) - x_hat * mean(w dy x_hat)), the means over the row
        c1 = tl.sum(x_hat * w_dy, axis=1) / N
        c2 = tl.sum(w_dy, axis=1) / N
        dx = (w_dy - x_hat * c1[:, None] - c2[:, None]) * rstd[:, None]
        tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=ok)
        dw += tl.sum(dy * x_hat, axis=0)
        db += tl.sum(dy, axis=0)
    tl.store(PARTIAL_DW + program * N + cols, dw, mask=col_ok)
    tl.store(PARTIAL_DB + program * N + cols, db, mask=col_ok)
