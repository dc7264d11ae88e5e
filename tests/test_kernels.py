"""kernels.py: where its Triton kernels apply, and the kernels themselves run by Triton's interpreter on the
CPU (tests/interpreted_kernels.py, in a process of its own: TRITON_INTERPRET is read when triton is
imported). tests/test_cuda.py runs them compiled on a GPU."""
import os
import subprocess
import sys

import pytest
import torch

import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_kernels_serve_cuda_training_only(monkeypatch):
    monkeypatch.setattr(kernels, "LAYER_NORM", "triton")
    x = torch.zeros(4, 8, requires_grad=True)
    assert not kernels.fused_layer_norm_applies(x)  # a CPU tensor, not interpreted
    monkeypatch.setattr(kernels, "INTERPRET", True)
    assert kernels.fused_layer_norm_applies(x) == (kernels.triton is not None)
    assert not kernels.fused_layer_norm_applies(x.detach())  # no gradient wanted: inference, exports
    assert not kernels.fused_layer_norm_applies(torch.zeros(0, 8, requires_grad=True))  # no rows: no launch
    with torch.no_grad():
        assert not kernels.fused_layer_norm_applies(x)
    monkeypatch.setattr(kernels, "LAYER_NORM", "torch")
    assert not kernels.fused_layer_norm_applies(x)


def test_the_kernels_under_the_interpreter():
    pytest.importorskip("triton")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/interpreted_kernels.py"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "6 passed" in result.stdout, result.stdout[-2000:]


def test_the_kernels_compile_for_the_gpus_users_train_on():
    """Triton compiles both kernels to machine code for a GPU that is not here: what the interpreter does not
    check (types, layouts, the backend's limits), for each pair of types CUDA autocast gives, in the narrowest
    block and the widest (swin_base's 4 x 512 channels before the last merging, 2 rows a block). Specialised
    as Triton specialises a launch with PyTorch's tensors (16-byte aligned, widths a multiple of 16), the
    rows move in 16-byte vectors, not element by element (what the bandwidth needs)."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    kernels_ = kernels.compiled()
    # the H100's and H200's (sm_90) and the A100's (sm_80), which train in bf16; the T4's (sm_75): fp16
    for arch, x, y, width in ((90, "bf16", "bf16", 128), (90, "bf16", "fp32", 2048), (80, "fp32", "fp32", 128),
                              (75, "fp16", "fp16", 2048)):
        block_m, block_n, warps = kernels._blocks(width)
        blocks = {"BLOCK_M": block_m, "BLOCK_N": block_n}
        sizes = {"M": "i32", "N": "i32"}
        forward = {"X": f"*{x}", "W": "*fp32", "B": "*fp32", "Y": f"*{y}", "MEAN": "*fp32", "RSTD": "*fp32",
                   **sizes, "eps": "fp32", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr"}
        backward = {"DY": f"*{y}", "X": f"*{x}", "W": "*fp32", "MEAN": "*fp32", "RSTD": "*fp32", "DX": f"*{x}",
                    "PARTIAL_DW": "*fp32", "PARTIAL_DB": "*fp32", **sizes, "rows_per_program": "i32",
                    "BLOCK_M": "constexpr", "BLOCK_N": "constexpr"}
        for kernel, signature in ((kernels_.forward, forward), (kernels_.backward, backward)):
            aligned = {(i,): [["tt.divisibility", 16]] for i, (name, kind) in enumerate(signature.items())
                       if kind.startswith("*") or name in ("N", "rows_per_program")}
            binary = triton.compile(ASTSource(kernel, signature, constexprs=blocks, attrs=aligned),
                                    target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
            assert binary.asm["cubin"], (kernel, x, y, block_n)
            ptx = binary.asm["ptx"]
            assert "ld.global.v4.b32" in ptx and "st.global.v4.b32" in ptx, (kernel, x, y, block_n)
            assert "ld.global.b16" not in ptx and "st.global.b16" not in ptx, (kernel, x, y, block_n)
