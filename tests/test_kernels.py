"""kernels.py: where its Triton kernels apply, and the kernels themselves run by Triton's interpreter on the
CPU (tests/interpreted_kernels.py, in a process of its own: TRITON_INTERPRET is read when triton is
imported). tests/test_cuda.py runs them compiled on a GPU."""
import os
import re
import subprocess
import sys
import tempfile
import warnings

import pytest
import torch

import attention
import kernels
import model
from test_model import compiled_graphs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_kernels_serve_cuda_training_only(monkeypatch):
    monkeypatch.setattr(kernels, "LAYER_NORM", "triton")
    x = torch.zeros(4, 8, requires_grad=True)
    assert not kernels.fused_layer_norm_applies(x)  # a CPU tensor, not interpreted
    monkeypatch.setattr(kernels, "INTERPRET", True)
    assert kernels.fused_layer_norm_applies(x) is kernels.HAS_TRITON  # found without importing it: no order
    assert not kernels.fused_layer_norm_applies(x.detach())  # no gradient wanted: inference, exports
    assert not kernels.fused_layer_norm_applies(torch.zeros(0, 8, requires_grad=True))  # no rows: no launch
    with torch.no_grad():
        assert not kernels.fused_layer_norm_applies(x)
    monkeypatch.setattr(kernels, "LAYER_NORM", "torch")
    assert not kernels.fused_layer_norm_applies(x)


def test_layer_norm_auto_gives_way_where_the_kernels_do_not_run(monkeypatch, capsys):
    """LAYER_NORM's default, "auto": a CPU tensor takes F.layer_norm without trying the kernels; where they fail
    to build or run (here the interpreter is claimed but Triton was imported without it, so it looks for a GPU),
    one line says so, once, and every LayerNorm takes F.layer_norm, its weights then cast with the stage's."""
    pytest.importorskip("triton")
    assert kernels.LAYER_NORM == "auto"
    kernels.layer_norm_runs.cache_clear()
    x = torch.zeros(4, 8, requires_grad=True)
    norm = model.LayerNorm(8, keep_autocast_type=True)
    assert not kernels.fused_layer_norm_applies(x) and norm.casts_weights_at_every_use
    assert kernels.layer_norm_runs.cache_info().currsize == 0
    monkeypatch.setattr(kernels, "INTERPRET", True)
    try:
        assert [kernels.fused_layer_norm_applies(x) for _ in range(3)] == [False] * 3
        assert norm.casts_weights_at_every_use
        notice = capsys.readouterr().out
        assert notice.count("notice: kernels.py's LayerNorm does not run here") == 1, notice
        monkeypatch.setattr(kernels, "LAYER_NORM", "triton")  # forced, it is taken without the check
        assert kernels.fused_layer_norm_applies(x) and not norm.casts_weights_at_every_use
    finally:
        kernels.layer_norm_runs.cache_clear()


def test_the_kernels_under_the_interpreter():
    pytest.importorskip("triton")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/interpreted_kernels.py"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "27 passed" in result.stdout, result.stdout[-2000:]


def compile_for_gpu(kernel, signature: dict, constexprs: dict, arch: int, warps: int, aligned_ints=()) -> dict:
    """Triton's machine code for a GPU that is not here (its "ptx" and "cubin"), specialised as Triton
    specialises a launch with PyTorch's tensors: pointers 16-byte aligned, and the named ints multiples of 16."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    signature = {**signature, **{name: "constexpr" for name in constexprs}}
    aligned = {(i,): [["tt.divisibility", 16]] for i, (name, kind) in enumerate(signature.items())
               if kind.startswith("*") or name in aligned_ints}
    binary = triton.compile(ASTSource(kernel, signature, constexprs=constexprs, attrs=aligned),
                            target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
    assert binary.asm["cubin"]
    return binary.asm


def test_the_kernels_compile_for_the_gpus_users_train_on():
    """Triton compiles both LayerNorm kernels to machine code for a GPU that is not here: what the interpreter
    does not check (types, layouts, the backend's limits), for each pair of types CUDA autocast gives, in the
    narrowest block and the widest (swin_base's 4 x 512 channels before the last merging, 2 rows a block).
    The rows move in 16-byte vectors, not element by element (what the bandwidth needs)."""
    pytest.importorskip("triton")
    kernels_ = kernels.compiled()
    # the H100's and H200's (sm_90) and the A100's (sm_80), which train in bf16; the T4's (sm_75): fp16
    for arch, x, y, width in ((90, "bf16", "bf16", 128), (90, "bf16", "fp32", 2048), (80, "fp32", "fp32", 128),
                              (75, "fp16", "fp16", 2048)):
        block_m, block_n, warps = kernels._blocks(width)
        blocks = {"BLOCK_M": block_m, "BLOCK_N": block_n}
        sizes = {"M": "i32", "N": "i32"}
        forward = {"X": f"*{x}", "W": "*fp32", "B": "*fp32", "Y": f"*{y}", "MEAN": "*fp32", "RSTD": "*fp32",
                   **sizes, "eps": "fp32"}
        backward = {"DY": f"*{y}", "X": f"*{x}", "W": "*fp32", "MEAN": "*fp32", "RSTD": "*fp32", "DX": f"*{x}",
                    "PARTIAL_DW": "*fp32", "PARTIAL_DB": "*fp32", **sizes, "rows_per_program": "i32"}
        for kernel, signature in ((kernels_.forward, forward), (kernels_.backward, backward)):
            ptx = compile_for_gpu(kernel, signature, blocks, arch, warps, ("N", "rows_per_program"))["ptx"]
            assert "ld.global.v4.b32" in ptx and "st.global.v4.b32" in ptx, (kernel, x, y, block_n)
            assert "ld.global.b16" not in ptx and "st.global.b16" not in ptx, (kernel, x, y, block_n)


def test_the_attention_kernels_compile_for_the_gpus_users_train_on():
    """Both window attention kernels compile for the H100's and the A100's architecture, in bf16 (autocast)
    and float32, with and without the shift mask, at the window sizes they take (7 x 7 and 8 x 8 tokens in
    blocks of 64, 4 x 4 in 16), the forward one also normalising V2's q and k, and their products of blocks run on
    the tensor cores (mma instructions)."""
    pytest.importorskip("triton")
    kernels_ = kernels.compiled()
    sizes = {"N": "i32", "D": "i32", "HEADS": "i32", "WINDOWS": "i32"}
    # the (window, head, token) strides of q, k and v and of the output: multiples of 16 in every layout the model
    # gives (packed: 3C, d and N x 3C; C, d and N x C), which Triton specialises on
    strides = {name: "i32" for name in ("in_window", "in_head", "in_token", "out_window", "out_head", "out_token")}
    for arch, dtype, tokens, masked, v2 in ((90, "bf16", 49, True, False), (90, "bf16", 64, False, False),
                                            (90, "bf16", 64, True, True), (80, "bf16", 16, True, False),
                                            (80, "fp32", 49, True, False)):
        io = {name: f"*{dtype}" for name in ("Q", "K", "V")}
        forward = {**io, "BIAS": "*fp32", "MASK": "*fp32", "TEMPERATURE": "*fp32", "OUT": f"*{dtype}", "LSE": "*fp32",
                   **sizes, "scale": "fp32", **strides}
        backward = {**io, "BIAS": "*fp32", "MASK": "*fp32", "OUT": f"*{dtype}", "DOUT": f"*{dtype}", "LSE": "*fp32",
                    "DQ": f"*{dtype}", "DK": f"*{dtype}", "DV": f"*{dtype}", "PARTIAL_DBIAS": "*fp32", **sizes,
                    "BATCH_WINDOWS": "i32", "per_program": "i32", "scale": "fp32", **strides}
        # float32 as train.py --amp off runs it on a GPU: TF32 products (tune_for)
        constexprs = {"HAS_MASK": masked, **kernels._attention_blocks(tokens, 32), "PRECISION": "tf32"}
        for kernel, signature, warps, most, more in ((kernels_.attention_forward, forward, 4, 0, {"NORMALIZE": v2}),
                                                     (kernels_.attention_backward, backward, 8, 256, {})):
            if v2 and not more:
                continue  # V2's normalising is the forward kernel's only
            ptx = compile_for_gpu(kernel, signature, {**constexprs, **more}, arch, warps, ("D", *strides))["ptx"]
            assert "mma" in ptx, (kernel, arch, dtype, tokens)
            if arch == 90:  # the window's blocks stay in registers: none spilled forward, a few bytes backward
                assert spilled_bytes(ptx, arch) <= most, (kernel, dtype, tokens)


def spilled_bytes(ptx: str, arch: int) -> int:
    """The bytes a thread spills to memory, by the ptxas that Triton ships (ptxas -v)."""
    from triton.backends.nvidia.compiler import get_ptxas
    with tempfile.TemporaryDirectory() as scratch:
        source = os.path.join(scratch, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        done = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a", source, "-o", os.devnull],
                              capture_output=True, text=True, check=True)
    return int(re.search(r"(\d+) bytes spill stores", done.stderr).group(1))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
def test_attention_gives_way_to_plain_where_the_kernel_does_not_run(monkeypatch):
    x = torch.zeros(8, 49, 96, requires_grad=True)  # (windows, tokens, channels)
    monkeypatch.setattr(attention, "ATTENTION", "triton")
    assert attention.choose_attention(x, 0.0) == "plain"  # a CPU tensor, not interpreted
    monkeypatch.setattr(kernels, "INTERPRET", True)
    assert attention.choose_attention(x, 0.0) == ("triton" if kernels.HAS_TRITON else "plain")
    assert attention.choose_attention(x, 0.1) == "plain"  # attention dropout: the kernel has none
    assert attention.choose_attention(torch.zeros(2, 144, 96), 0.0) == "plain"  # 12 x 12 windows: too many tokens
    traced = []  # predict.py --export x.pt traces the model: the program must not need kernels.py's operators
    with warnings.catch_warnings():  # asked first whether it traces: no shape test recorded as a value
        warnings.simplefilter("error", torch.jit.TracerWarning)
        torch.jit.trace(lambda x: traced.append(attention.choose_attention(x, 0.0)) or x, x.detach(),
                        check_trace=False)
    assert traced == ["plain"]


def test_chosen_attention_takes_the_kernel_only_where_it_ran(monkeypatch, capsys):
    """CUDA's choice for inference, played on the CPU: `triton` chosen (not forced) gives way to plain under
    torch.compile, and where the kernel fails to build or run, with one line saying so. Here it fails:
    the interpreter is claimed but Triton was imported without it, so it looks for a GPU."""
    pytest.importorskip("triton")
    x = torch.zeros(8, 49, 96)
    monkeypatch.setitem(attention.CHOSEN_ATTENTION, ("cpu", "inference"), "triton")
    monkeypatch.setattr(kernels, "INTERPRET", True)
    kernels.attention_runs.cache_clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert attention.choose_attention(x, 0.0) == "plain" and kernels.attention_runs.cache_info().currsize == 0
    monkeypatch.undo()
    monkeypatch.setitem(attention.CHOSEN_ATTENTION, ("cpu", "inference"), "triton")
    monkeypatch.setattr(kernels, "INTERPRET", True)
    try:
        assert [attention.choose_attention(x, 0.0) for _ in range(3)] == ["plain"] * 3
        notice = capsys.readouterr().out
        assert notice.count("notice: kernels.py's attention does not run here") == 1, notice  # said once
    finally:
        kernels.attention_runs.cache_clear()


def test_the_attention_kernel_stays_in_torch_compiles_graph(monkeypatch):
    """With the attention kernel, torch.compile captures a V1 model in one graph holding an operator per block
    (swin.window_attention_packed), and a training step traces through the operator's backward; V2's inference, one
    graph with its operator (q and k normalised inside) per block. Traced only, with CPU tensors standing in for
    CUDA ones: the kernels are not run (tests/test_cuda.py runs the compiled step on a GPU)."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from interpreted_kernels import micro_model
    pytest.importorskip("triton")
    monkeypatch.setattr(kernels, "INTERPRET", True)  # CPU tensors go to the kernel; Triton itself not interpreting
    monkeypatch.setattr(attention, "ATTENTION", "triton")
    net, x = micro_model(1)
    blocks = sum(len(stage.blocks) for stage in net.layers)
    graphs = compiled_graphs(net, x)
    op = torch.ops.swin.window_attention_packed  # V1's: q, k and v read from the qkv product in place
    calls = [node for node in graphs[0].graph.nodes if node.target is op]
    assert len(graphs) == 1 and len(calls) == blocks
    v2, x2 = micro_model(2)
    with torch.no_grad():
        graphs = compiled_graphs(v2.eval(), x2)
    cosine = torch.ops.swin.cosine_window_attention_packed
    assert len(graphs) == 1 and sum(node.target is cosine for node in graphs[0].graph.nodes) == blocks

    net, x = micro_model(1)  # afresh: the compile's tracing left its fake window layouts in the model
    names, params = zip(*net.named_parameters())

    def step(x, *params):
        out = torch.func.functional_call(net, dict(zip(names, params)), (x,))
        return torch.autograd.grad(out.logsumexp(1).mean(), params)
    traced = make_fx(step, tracing_mode="fake")(x, *params)
    targets = [node.target for node in traced.graph.nodes]
    assert targets.count(op.default) == blocks
    assert targets.count(torch.ops.swin.window_attention_packed_backward.default) == blocks
