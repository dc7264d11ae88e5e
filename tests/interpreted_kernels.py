"""kernels.py's Triton kernels run on the CPU by Triton's interpreter: test_kernels.py runs this file in a
pytest of its own with TRITON_INTERPRET=1 (read when triton is imported). Not collected on its own
(no test_ prefix); tests/test_cuda.py runs the same kernels compiled on a GPU."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from model import create_model

pytestmark = pytest.mark.skipif(not kernels.INTERPRET, reason="run by test_kernels.py, with TRITON_INTERPRET=1")


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


def count_kernel_calls(monkeypatch) -> list:
    """A list that grows by one entry (the input's shape) per call of kernels.layer_norm (test_cuda.py's too)."""
    calls = []
    real = kernels.layer_norm
    monkeypatch.setattr(kernels, "layer_norm", lambda *args: calls.append(args[0].shape) or real(*args))
    return calls


@pytest.mark.parametrize("version", [1, 2])
def test_a_training_step_with_the_kernels_matches_torch(version, monkeypatch):
    """Every LayerNorm of a V1 or V2 model through the kernels, in training only: the loss and every
    gradient as with F.layer_norm."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5, img_size=64, version=version,
                       drop_path_rate=0.0)
    x = torch.randn(2, 3, 64, 64)

    def gradients(kind):
        monkeypatch.setattr(kernels, "LAYER_NORM", kind)
        net.zero_grad()
        loss = net(x).logsumexp(1).mean()
        loss.backward()
        return loss, {name: p.grad.clone() for name, p in net.named_parameters()}

    calls = count_kernel_calls(monkeypatch)
    want_loss, want = gradients("torch")
    assert not calls
    loss, got = gradients("triton")
    blocks = sum(len(stage.blocks) for stage in net.layers)
    norms = sum(isinstance(m, torch.nn.LayerNorm) for m in net.modules())
    assert len(calls) == norms == 2 * blocks + 3 + 1 + 1  # the blocks' two, 3 mergings, patch embedding, the last
    assert abs(loss.item() - want_loss.item()) < 1e-5
    for name in want:
        assert relative_error(got[name], want[name]) < 1e-4, name
    with torch.no_grad():  # inference, and so every export, keeps F.layer_norm
        net(x)
    assert len(calls) == norms
