"""kernels.py's Triton kernels run on the CPU by Triton's interpreter, alone, in a model, and in the benchmarks'
rows that use them: test_kernels.py runs this file in a pytest of its own with TRITON_INTERPRET=1 (read when
triton is imported). Not collected on its own (no test_ prefix); tests/test_cuda.py runs the same kernels
compiled on a GPU."""
import pytest
import torch
import torch.nn.functional as F

import attention
import kernels
from model import create_model

pytestmark = pytest.mark.skipif(not kernels.INTERPRET, reason="run by test_kernels.py, with TRITON_INTERPRET=1")


def convert_bf16_in_interpreted_dots() -> None:
    """Triton's interpreter keeps bf16 as its uint16 bits and multiplies those bits in tl.dot (3.8:
    triton-lang/triton#11584, "not supported yet"); a GPU multiplies the values. Here the interpreter
    converts a bf16 operand first, as its own casts do, so that the attention kernels' bf16 products
    are checked for what a GPU computes."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter
    create_dot = interpreter.InterpreterBuilder.create_dot

    def value(x):
        if x.dtype.scalar != tl.bfloat16:
            return x
        return interpreter.TensorHandle(
            interpreter._convert_float(x.data, tl.bfloat16, tl.float32, None).view(np.float32), tl.float32)
    interpreter.InterpreterBuilder.create_dot = lambda self, a, b, *rest: create_dot(self, value(a), value(b), *rest)


if kernels.INTERPRET:
    convert_bf16_in_interpreted_dots()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest difference over the largest value (zero where both are zero: V2's logit scales at init)."""
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("rows, width, dtype, out_dtype", [
    (1001, 96, torch.float32, torch.float32),  # backward: 8 programs of 4 blocks of 32 rows, the last one short
    (333, 100, torch.bfloat16, torch.bfloat16),  # a width that is no power of two
    (5, 384, torch.bfloat16, torch.float32),  # fewer rows than a block; bf16 in, float32 out (CUDA autocast's rule)
    (50, 1536, torch.float32, torch.float32),  # swin_tiny's widest row, 2 rows a block
])
def test_layer_norm_matches_float64_both_ways(rows, width, dtype, out_dtype):
    check_layer_norm(rows, width, dtype, out_dtype, "cpu")


def check_layer_norm(rows: int, width: int, dtype, out_dtype, device: str) -> None:
    """kernels.layer_norm against F.layer_norm in float64, output and the three gradients (test_cuda.py's too)."""
    torch.manual_seed(0)
    x = (torch.randn(2, rows, width, device=device) * 3 + 1).to(dtype).requires_grad_()
    weight = torch.randn(width, device=device, requires_grad=True)
    bias = torch.randn(width, device=device, requires_grad=True)
    y = kernels.layer_norm(x, weight, bias, 1e-5, out_dtype)
    dy = torch.randn(y.shape, device=device).to(out_dtype)
    grads = torch.autograd.grad(y, (x, weight, bias), dy)
    exact = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    want_y = F.layer_norm(exact[0], (width,), exact[1], exact[2], 1e-5)
    want_grads = torch.autograd.grad(want_y, exact, dy.double())
    assert y.dtype == out_dtype and grads[0].dtype == dtype and grads[1].dtype == torch.float32
    rounding = 1e-6 if dtype == out_dtype == torch.float32 else 1e-2  # bf16 in or out: its rounding
    assert relative_error(y, want_y) < rounding
    assert relative_error(grads[0], want_grads[0]) < rounding
    # the affine gradients are summed in float32 from inputs as given: the input's own rounding only
    assert relative_error(grads[1], want_grads[1]) < 1e-5 and relative_error(grads[2], want_grads[2]) < 1e-5


@pytest.fixture(autouse=True)
def layer_norm_as_each_test_asks(monkeypatch):
    """F.layer_norm unless a test asks for the kernels: LAYER_NORM's default, "auto", takes them here too, where the
    interpreter runs them (the reference steps would then run them as well)."""
    monkeypatch.setattr(kernels, "LAYER_NORM", "torch")


def count_kernel_calls(monkeypatch, name: str = "layer_norm") -> list:
    """A list that grows by one entry (the first input's shape) per call of kernels.layer_norm, or of the
    kernels.py function named (test_cuda.py's too)."""
    calls = []
    real = getattr(kernels, name)
    monkeypatch.setattr(kernels, name, lambda *args: calls.append(args[0].shape) or real(*args))
    return calls


def micro_model(version: int) -> tuple:
    """(a V1 or V2 micro model at 64 px, a batch of 2 for it): windows of 16 tokens and of 4, shifted and not."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5, img_size=64, version=version,
                       drop_path_rate=0.0)
    with torch.no_grad():  # off the init, where every V2 block is the identity (its post-norms are zero)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net, torch.randn(2, 3, 64, 64)


def training_step(net, x) -> tuple:
    """The loss of a training step on x and every parameter's gradient."""
    net.zero_grad()
    loss = net(x).logsumexp(1).mean()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in net.named_parameters()}


def assert_same_step(got: tuple, want: tuple) -> None:
    assert abs(got[0] - want[0]) < 1e-5
    for name in want[1]:
        assert relative_error(got[1][name], want[1][name]) < 1e-4, name


@pytest.mark.parametrize("version", [1, 2])
def test_a_training_step_with_the_kernels_matches_torch(version, monkeypatch):
    """Every LayerNorm of a V1 or V2 model through the kernels, in training only: the loss and every
    gradient as with F.layer_norm."""
    net, x = micro_model(version)
    calls = count_kernel_calls(monkeypatch)
    want = training_step(net, x)
    assert not calls
    monkeypatch.setattr(kernels, "LAYER_NORM", "triton")
    got = training_step(net, x)
    blocks = sum(len(stage.blocks) for stage in net.layers)
    norms = sum(isinstance(m, torch.nn.LayerNorm) for m in net.modules())
    assert len(calls) == norms == 2 * blocks + 3 + 1 + 1  # the blocks' two, 3 mergings, patch embedding, the last
    assert_same_step(got, want)
    with torch.no_grad():  # inference, and so every export, keeps F.layer_norm
        net(x)
    assert len(calls) == norms


def test_layer_norm_auto_takes_the_kernels_where_they_run(monkeypatch, capsys):
    """LAYER_NORM's default, "auto", played here where the interpreter stands in for CUDA: the kernels are tried
    once, agree with F.layer_norm, and then serve every LayerNorm of a training step, which gives F.layer_norm's."""
    net, x = micro_model(2)
    want = training_step(net, x)
    calls = count_kernel_calls(monkeypatch)
    monkeypatch.setattr(kernels, "LAYER_NORM", "auto")
    kernels.layer_norm_runs.cache_clear()
    try:
        got = training_step(net, x)
        assert kernels.layer_norm_runs(x.device) and "notice" not in capsys.readouterr().out
    finally:
        kernels.layer_norm_runs.cache_clear()
    norms = sum(isinstance(m, torch.nn.LayerNorm) for m in net.modules())
    assert len(calls) == 1 + norms  # the try, then every LayerNorm
    assert_same_step(got, want)


@pytest.mark.parametrize("images, windows, heads, tokens, dtype, masked", [
    # swin_tiny's 7 x 7 windows, shifted: 64 tokens a block, 15 past the window; 20 windows, so that backward's
    # programs sum the bias gradient over 16 windows and over 4
    (5, 4, 3, 49, torch.float32, True),
    (9, 4, 2, 16, torch.float32, False),  # 4 x 4 windows, regular: no mask, the block just full; 36 windows
    (2, 2, 2, 64, torch.bfloat16, True),  # V2's 8 x 8 windows in bf16, as CUDA autocast trains
    (2, 2, 3, 49, torch.float16, True),  # fp16 (--amp fp16: inference takes the kernel on Ampere and newer too)
    (1, 1, 1, 4, torch.bfloat16, False),  # a 2 x 2 window (the micro variant's last stage at 64 px)
])
@pytest.mark.parametrize("packed", [False, True])
def test_window_attention_matches_float64_both_ways(images, windows, heads, tokens, dtype, masked, packed):
    check_window_attention(images, windows, heads, tokens, dtype, masked, "cpu", packed)


def check_window_attention(images: int, windows: int, heads: int, tokens: int, dtype, masked: bool,
                           device: str, packed: bool = False) -> None:
    """kernels.window_attention (or, packed, kernels.packed_window_attention, its q, k and v the heads of one qkv
    product, its output as the projection reads it) against the plain path in float64, output and the gradients of
    q, k, v and the bias; in bf16 within twice what the plain path itself is off in bf16 (test_cuda.py's too)."""
    torch.manual_seed(0)
    d = 32
    q, k, v = [torch.randn(images * windows, heads, tokens, d, device=device) for _ in range(3)]
    bias = torch.randn(heads, tokens, tokens, device=device)
    mask = None
    if masked:  # the shift mask's -100 where two tokens come from different parts of the map
        mask = torch.zeros(windows, tokens, tokens, device=device)
        mask.masked_fill_(torch.rand(windows, tokens, tokens, device=device) < 0.3, -100.0)
    grad = torch.randn(q.shape, device=device)

    def run(fn, dtype):
        inputs = [t.to(dtype).requires_grad_() for t in (q, k, v)] + [bias.clone().requires_grad_()]
        out = fn(*inputs, d ** -0.5)
        return [out, *torch.autograd.grad(out, inputs, grad.to(out.dtype))]

    def plain(q, k, v, bias, scale):
        return attention.window_attention(q, k, v, bias, None if mask is None else mask.to(q.dtype), 0.0, "plain",
                                          scale)

    def fused(q, k, v, bias, scale):
        if not packed:
            return kernels.window_attention(q, k, v, bias, mask, scale)
        b_, heads, n, d = q.shape
        qkv = torch.stack((q, k, v)).permute(1, 3, 0, 2, 4).reshape(b_, n, 3 * heads * d)  # as model.py's qkv
        return kernels.packed_window_attention(qkv, heads, bias, mask, scale).view(b_, n, heads, d).transpose(1, 2)

    want = run(plain, torch.float64)
    got = run(fused, dtype)
    assert [t.dtype for t in got] == [dtype] * 4 + [torch.float32]
    errors = [relative_error(a, b) for a, b in zip(got, want)]
    if dtype == torch.float32:
        assert max(errors) < 1e-5, errors
    else:
        plain_errors = [relative_error(a, b) for a, b in zip(run(plain, dtype), want)]
        assert all(e <= max(2 * p, 1e-2) for e, p in zip(errors, plain_errors)), (errors, plain_errors)


@pytest.mark.parametrize("images, windows, heads, tokens, dtype, masked", [
    (2, 2, 3, 64, torch.bfloat16, True),  # V2's 8 x 8 windows in bf16, shifted, as CUDA autocast infers
    (3, 4, 2, 49, torch.float32, True),  # 7 x 7: 15 rows of the block past the window
    (2, 1, 2, 16, torch.float16, False),  # fp16, a 4 x 4 window, regular
])
def test_cosine_packed_attention_matches_float64(images, windows, heads, tokens, dtype, masked):
    check_cosine_attention(images, windows, heads, tokens, dtype, masked, "cpu")


def check_cosine_attention(images: int, windows: int, heads: int, tokens: int, dtype, masked: bool,
                           device: str) -> None:
    """V2's packed attention, q and k normalised in the kernel and q times its head's temperature, against the plain
    path's scaled_normalize and attention in float64 from the same qkv product; a key of zeros (V2's keys have no
    bias: a padded token) comes out as F.normalize makes it, zeros, not NaN. In a reduced type within twice what the
    plain path itself is off in it (test_cuda.py's too)."""
    torch.manual_seed(0)
    d, b_ = 32, images * windows
    qkv = torch.randn(b_, tokens, 3 * heads * d, device=device)
    qkv[:, -1, heads * d:2 * heads * d] = 0.0  # the last token's keys, every head
    bias = torch.randn(heads, tokens, tokens, device=device)
    mask = torch.where(torch.rand(windows, tokens, tokens, device=device) < 0.3, -100.0, 0.0) if masked else None
    temperature = 1 + 29 * torch.rand(heads, device=device)  # V2's start at 10, at most 100

    def plain(dtype):
        q, k, v = attention.split_heads(qkv.to(dtype), heads)
        q = attention.scaled_normalize(q, temperature.to(torch.float64 if dtype == torch.float64 else torch.float32)
                                       .view(heads, 1, 1))
        k = attention.scaled_normalize(k, torch.ones(heads, 1, 1, dtype=q.dtype, device=device))
        out = attention.window_attention(q, k, v, bias, None if mask is None else mask.to(q.dtype), 0.0, "plain")
        return out.transpose(1, 2).reshape(b_, tokens, heads * d)

    want = plain(torch.float64)
    got = kernels.packed_window_attention(qkv.to(dtype), heads, bias, mask, 1.0, temperature)
    assert got.dtype == dtype and got.shape == want.shape and torch.isfinite(got).all()
    error = relative_error(got, want)
    if dtype == torch.float32:
        assert error < 1e-5, error
    else:
        plain_error = relative_error(plain(dtype), want)
        assert error <= max(2 * plain_error, 1e-2), (error, plain_error)


@pytest.mark.parametrize("version", [1, 2])
def test_a_training_step_with_the_attention_kernel_matches_plain(version, monkeypatch):
    """Every window attention of a V1 or V2 model through the kernel in training (V1's packed, its q, k and v read
    from the qkv product in place): the loss and every gradient as with the plain path."""
    net, x = micro_model(version)
    calls = count_kernel_calls(monkeypatch, "packed_window_attention" if version == 1 else "window_attention")
    monkeypatch.setattr(attention, "ATTENTION", "plain")
    want = training_step(net, x)
    assert not calls
    monkeypatch.setattr(attention, "ATTENTION", "triton")
    got = training_step(net, x)
    assert len(calls) == sum(len(stage.blocks) for stage in net.layers)
    assert_same_step(got, want)


@pytest.mark.parametrize("version", [1, 2])
def test_inference_takes_the_kernel_where_it_is_chosen_and_runs(version, monkeypatch, capsys):
    """CUDA's choice for inference, played here: chosen (not forced), the kernels are tried once, run, and then
    serve every window attention of the model, packed (V2's q and k normalised in the kernel), which gives the plain
    path's logits."""
    monkeypatch.setitem(attention.CHOSEN_ATTENTION, ("cpu", "inference"), "triton")
    kernels.attention_runs.cache_clear()
    net, x = micro_model(version)
    net.eval()
    with torch.no_grad(), attention.forced("plain"):
        want = net(x)
    tries = count_kernel_calls(monkeypatch, "window_attention")
    calls = count_kernel_calls(monkeypatch, "packed_window_attention")
    with torch.no_grad():
        got = net(x)
    assert kernels.attention_runs(x.device) and "notice" not in capsys.readouterr().out
    # the try: the unpacked kernel once, the packed one as V1's and as V2's; then each block's
    assert len(tries) == 1 and len(calls) == 2 + sum(len(stage.blocks) for stage in net.layers)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_the_attention_check_refuses_kernels_whose_outputs_differ(monkeypatch, capsys):
    """kernels.attention_runs compares both kernels' outputs with the plain path's: a kernel that runs but computes
    something else (here the packed one, standing in for a miscompiled build) leaves attention to plain."""
    kernels.attention_runs.cache_clear()
    monkeypatch.setattr(kernels, "packed_window_attention", lambda qkv, *rest: qkv[..., :qkv.shape[-1] // 3])
    try:
        assert not kernels.attention_runs(torch.device("cpu"))
        assert "does not run here (its outputs differ from the plain path's); plain attention instead" in \
            capsys.readouterr().out
    finally:
        kernels.attention_runs.cache_clear()


# --- The benchmarks' rows that run the kernels (tests/test_bench.py runs the rest of each benchmark)

def test_bench_train_gives_a_bare_row_per_layer_norm_kind_and_weights_cast(bench):
    """--layer-norm torch triton --cast-once on off, as a GPU session runs them."""
    out = bench("bench_train.py", "--device", "cpu", "--img-size", "64", "--batch-size", "4", "--rounds", "1",
                "--steps", "1", "--no-e2e", "--layer-norm", "torch", "triton", "--cast-once", "on", "off")
    assert "LayerNorm torch / triton, weights cast once on / off" in out and "loader workers" not in out  # none run
    for row in ("bare torch LN, cast once on / timm", "bare torch LN, cast once off / timm",
                "bare triton LN, cast once on / timm", "bare triton LN, cast once off / timm"):
        assert row in out, row


def test_bench_traffic_counts_one_attention_operator_each_way_a_block_with_the_kernel(bench):
    """kernels.py's attention: one operator each way per block (V1's packed, q, k and v read from the qkv product in
    place), no bmm of ours (timm's plain path has its bmm)."""
    out = bench("bench_traffic.py", "--model", "swin_micro_patch4_window4_128", "--img-size", "64",
                "--batch-size", "2", "--top", "40", "--attention", "triton")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("window", "bmm"))}
    assert rows["window_attention_packed"][0] == rows["window_attention_packed_backward"][0] == "5"  # ours: calls
    assert rows["bmm"][:2] == ["0", "0.0"] and rows["bmm"][2] != "0"  # timm's bmm, plain
