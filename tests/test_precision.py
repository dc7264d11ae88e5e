"""precision.py and mixed precision in the model: the weights cast once a stage, to the bit of autocast's
results; model.LayerNorm's kept autocast type; the residual streams' types under CUDA's autocast rules (applied
on the CPU; tests/test_cuda.py runs them under CUDA's own)."""
import contextlib
import sys

import pytest
import torch

import model
import precision
from conftest import ROOT
from model import create_model


@pytest.mark.parametrize("version, checkpointing", [(1, False), (1, True), (2, False)])
def test_stages_cast_their_weights_once_with_autocasts_results_to_the_bit(version, checkpointing, monkeypatch):
    """Under autocast each stage casts the parameters that autocast casts at every use in one kernel, and their
    gradients in one (precision.CAST_ONCE): two launches a stage each way where there were two a parameter, and the
    outputs and gradients are autocast's own, to the bit; the parameters are themselves again afterwards.
    On the CPU under CUDA's rule for layer_norm; tests/test_cuda.py runs it under CUDA's autocast."""
    check_weights_cast_once(version, checkpointing, "cpu", torch.bfloat16, monkeypatch)


@contextlib.contextmanager
def deterministic():
    """PyTorch's deterministic kernels where it has them: sums in a fixed order, so that two runs can be equal to
    the bit on a GPU too (a warning, not an error, for an operator that has none)."""
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])


def check_weights_cast_once(version: int, checkpointing: bool, device: str, dtype, monkeypatch) -> None:
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=4, version=version, drop_path_rate=0.3,
                       grad_checkpointing=checkpointing).train().to(device)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    before = dict(net.named_parameters())
    cast = sum(p.numel() > 0 for stage in net.layers for m in stage.modules() if precision.cast_at_every_use(m)
               for p in m.parameters())
    x = torch.randn(2, 3, 64, 96, device=device)
    with torch.no_grad():
        net(x)  # the window layouts, built once, outside the counts
    autocast_rule = cuda_layer_norm_rule() if device == "cpu" else contextlib.nullcontext()

    def run(cast_once):
        monkeypatch.setattr(precision, "CAST_ONCE", cast_once)
        torch.manual_seed(1)  # the same drop-path draws in both runs
        calls = traffic().OperatorTraffic()
        with calls, autocast_rule, torch.autocast(device, dtype), deterministic():
            out = net(x)
            out.float().square().sum().backward()
        grads = {n: p.grad for n, p in net.named_parameters()}
        net.zero_grad(set_to_none=True)
        return out, grads, calls.calls

    out_autocast, grads_autocast, calls_autocast = run(False)
    out, grads, calls = run(True)
    # to the bit on a CPU; on a GPU the copies, views of one buffer, may start less aligned than autocast's own,
    # and cuBLASLt may then choose another kernel, whose sums round otherwise in the last bit
    def same(a, b):  # a few of the type's last bits, on a GPU
        within = 2e-3 if dtype == torch.float16 else 1e-2
        return torch.equal(a, b) if device == "cpu" else ((a.float() - b.float()).norm() <= within * b.float().norm())
    assert out.dtype == dtype and same(out, out_autocast)
    assert all(same(grads[name], grads_autocast[name]) for name in grads)
    if checkpointing:  # the blocks' recomputation casts each weight again, as autocast does
        assert calls["_to_copy"] < calls_autocast["_to_copy"]
    else:
        assert calls_autocast["_to_copy"] - calls["_to_copy"] == 2 * cast and cast > 20
    assert calls["_foreach_copy_"] == 2 * len(net.layers) and calls_autocast["_foreach_copy_"] == 0
    assert all(p is before[name] and isinstance(p, torch.nn.Parameter) for name, p in net.named_parameters())


def test_a_linear_put_in_after_the_first_cast_is_left_to_autocast(monkeypatch):
    """A stage lists its linears and LayerNorms at its first cast (precision.weights_cast); one put in later (a
    fine-tuning adapter, say) is cast by autocast as it runs: the same outputs and gradients, and the module it
    replaced keeps its parameters."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=4).train()
    x = torch.randn(2, 3, 64, 64)

    def run(cast_once):
        monkeypatch.setattr(precision, "CAST_ONCE", cast_once)
        with cuda_layer_norm_rule(), torch.autocast("cpu", torch.bfloat16):
            out = net(x)
        out.float().sum().backward()
        grads = {n: p.grad for n, p in net.named_parameters()}
        net.zero_grad(set_to_none=True)
        return out, grads
    run(True)
    mlp = net.layers[1].blocks[0].mlp
    replaced, mlp.fc1 = mlp.fc1, torch.nn.Linear(mlp.fc1.in_features, mlp.fc1.out_features)
    (out, grads), (want, want_grads) = run(True), run(False)
    assert torch.equal(out, want) and grads.keys() == want_grads.keys()
    assert all(torch.equal(grads[name], want_grads[name]) for name in grads)
    assert all(isinstance(p, torch.nn.Parameter) and p.dtype == torch.float32 for p in replaced.parameters())


def test_inference_holds_its_casts_while_the_weights_stay_as_they_were(monkeypatch):
    """Without gradients a stage's casts are made once and held: a second pass makes none and gives the same
    logits as casts made afresh (precision.HOLD_INFERENCE_CASTS off); weights changed in place (an EMA's update,
    load_state_dict) make the next pass cast them again, and a training pass drops them. A gradient through a
    frozen model after an inference_mode pass (predict.py --cam) takes casts of its own. tests/test_cuda.py runs it
    under CUDA's autocast."""
    check_inference_casts_held("cpu", monkeypatch)


def check_inference_casts_held(device: str, monkeypatch) -> None:
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=4).eval().to(device)
    x = torch.randn(2, 3, 64, 64, device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def infer(held=True):
        monkeypatch.setattr(precision, "HOLD_INFERENCE_CASTS", held)
        calls = traffic().OperatorTraffic()
        with calls, torch.inference_mode(), torch.autocast(device, torch.bfloat16):
            out = net(x)
        return out, calls.calls["_foreach_copy_"]

    def assert_fresh():  # casts made now, then held: the same logits as casts made at every pass
        (out, made), (again, again_made), (want, _) = infer(), infer(), infer(held=False)
        assert made == len(net.layers) and again_made == 0
        assert torch.equal(out, want) and torch.equal(again, want)
        return want

    first = assert_fresh()  # the casts held from here on
    with torch.no_grad():  # as an EMA updates its weights: in place, their version counters moved
        torch._foreach_mul_(list(net.parameters()), 0.9)
    averaged = assert_fresh()
    net.load_state_dict({k: v + 0.01 if v.is_floating_point() else v for k, v in net.state_dict().items()})
    loaded = assert_fresh()
    assert not torch.equal(averaged, first) and not torch.equal(loaded, averaged)
    net.train()  # a training step: its pass drops the held casts, its step moves the weights
    with torch.autocast(device, torch.bfloat16):
        net(x).float().square().mean().backward()
    assert not any(stage in precision._inference_casts for stage in net.layers)
    optimizer.step()
    assert not torch.equal(assert_fresh(), loaded)
    net.requires_grad_(False)
    image = x.clone().requires_grad_()
    with torch.autocast(device, torch.bfloat16):
        grad, = torch.autograd.grad(net(image).float().sum(), image)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def traffic():
    """bench/bench_traffic.py: its operator counter, and CUDA autocast's rule for layer_norm on the CPU."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_traffic
    return bench_traffic


def cuda_layer_norm_rule():
    """CUDA autocast's float32 rule for layer_norm, applied on the CPU (bench_traffic.py's, whose count it makes
    the GPU's): CPU autocast's own rule leaves layer_norm in bf16."""
    return traffic().CudaLayerNorm()


def test_held_casts_go_with_train_pys_optimizer_step_and_at_each_evaluation():
    """train.py's fused AdamW writes the weights without moving their version counters, and a compiled (or graphed)
    training pass never runs weights_cast, which dropped the held casts: every validation after the first scored
    the weights the first one saw. Here the step alone (as a compiled pass leaves it) and a change no counter sees
    (a broadcast's) each leave casts made of the weights as they are."""
    check_held_casts_go("cpu")


def check_held_casts_go(device: str) -> None:
    """The test above on `device` (test_cuda.py's on the GPU)."""
    import engine
    import evaluation
    import train
    from data import build_normalize
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5).eval().to(device)
    x = torch.randn(2, 3, 64, 64, device=device)

    def infer():
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16):
            return net(x)
    before = infer()
    assert any(stage in precision._inference_casts for stage in net.layers)
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1", "--lr", "1e-2"])
    state = engine.build_train_state(cfg, net, net, torch.device(device), torch.bfloat16, 10, [1] * 5)
    assert state.optimizer.defaults["fused"]
    for p in net.parameters():  # gradients as a compiled pass leaves them, without weights_cast's Python
        p.grad = torch.randn_like(p)
    versions = [p._version for p in net.parameters()]
    engine.optimizer_step(state, cfg)
    assert [p._version for p in net.parameters()] == versions  # what the held casts were keyed on
    after = infer()
    with torch.inference_mode(), torch.autocast(device, torch.bfloat16):
        precision.HOLD_INFERENCE_CASTS = False
        try:
            fresh = net(x)
        finally:
            precision.HOLD_INFERENCE_CASTS = True
    assert torch.equal(after, fresh) and not torch.equal(after, before)
    # a change no version counter sees, then an evaluation: it scores the weights as they are
    with torch.no_grad():
        for p in net.parameters():
            p.data.mul_(0.5)
    photo = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    batches = [(photo, torch.tensor([0, 1]), ["a.jpg", "b.jpg"], [])]
    held = evaluation.evaluate(net, batches, build_normalize(train=False), 5, torch.device(device), torch.bfloat16,
                               False)
    precision.HOLD_INFERENCE_CASTS = False
    try:
        want = evaluation.evaluate(net, batches, build_normalize(train=False), 5, torch.device(device),
                                   torch.bfloat16, False)
    finally:
        precision.HOLD_INFERENCE_CASTS = True
    assert held["loss"] == want["loss"]


def test_layer_norm_keeps_the_autocast_type():
    """Under CUDA's autocast rule for layer_norm (float32; applied here on the CPU, whose own rule
    differs), a norm that keeps the autocast type takes a bf16 input in one kernel and writes bf16,
    the float32 norm rounded once, forward and backward; a float32 input, or a norm without the
    switch, gets autocast's float32 norm."""
    torch.manual_seed(0)
    norm = model.LayerNorm(24, keep_autocast_type=True)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    plain = torch.nn.LayerNorm(24)
    plain.load_state_dict(norm.state_dict())
    x = (torch.randn(6, 24) * 3 + 1).bfloat16().requires_grad_()
    grad = torch.randn(6, 24)

    def run(net, inp):
        net.zero_grad()
        with cuda_layer_norm_rule(), torch.autocast("cpu", torch.bfloat16):
            out = net(inp)
        out.backward(grad.to(out.dtype))
        return out, inp.grad, net.weight.grad, net.bias.grad

    out, dx, dw, db = run(norm, x)
    x_ref = x.detach().float().requires_grad_()
    ref, dx_ref, dw_ref, db_ref = run(plain, x_ref)
    assert out.dtype == torch.bfloat16 and ref.dtype == torch.float32
    assert torch.allclose(out.float(), ref, atol=0.05, rtol=0.02)
    assert dx.dtype == torch.bfloat16 and torch.allclose(dx.float(), dx_ref, atol=0.05, rtol=0.02)
    assert torch.allclose(dw, dw_ref, atol=0.1, rtol=0.02) and torch.allclose(db, db_ref, atol=0.1, rtol=0.02)
    assert run(norm, x_ref)[0].dtype == torch.float32  # float32 in: autocast's rule
    norm.keep_autocast_type = False
    assert run(norm, x)[0].dtype == torch.float32


@pytest.mark.parametrize("version", [1, 2])
def test_residual_stream_types_under_cuda_autocast(version):
    """Under CUDA's autocast rules (applied on the CPU), V1's residual stream is bf16 in every stage (from
    stage 2 on it is in any AMP training), V2's float32 in every stage, as the official V2 trains; every
    block hands on the type it was given."""
    net = create_model("swin_micro_patch4_window4_128", num_classes=3, version=version).train()
    seen = []
    for stage in net.layers:
        for block in stage.blocks:
            block.register_forward_hook(lambda module, args, out: seen.append((args[0].dtype, out.dtype)))
    with cuda_layer_norm_rule(), torch.autocast("cpu", torch.bfloat16):
        net(torch.randn(2, 3, 64, 64)).float().sum().backward()
    stream = torch.bfloat16 if version == 1 else torch.float32
    assert len(seen) == sum(len(stage.blocks) for stage in net.layers)
    assert seen == [(stream, stream)] * len(seen)


@pytest.mark.parametrize("major, want", [(7, torch.float16), (8, torch.bfloat16), (9, torch.bfloat16)])
def test_auto_precision_takes_fp16_on_a_gpu_without_bf16_hardware(major, want, monkeypatch):
    """--amp auto: bf16 from Ampere (compute capability 8.0) on, fp16 with loss scaling before it. A T4 or V100
    answers torch.cuda.is_bf16_supported() with yes, as it can hold bf16 tensors (emulated, without tensor cores):
    asked that alone, --amp auto trained there in emulated bf16. Here a GPU of each kind, as torch sees it."""
    from precision import amp_dtype

    def is_bf16_supported(including_emulation=True):  # torch's answer on such a GPU
        return including_emulation or major >= 8
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert amp_dtype("auto", torch.device("cuda", 0)) == want


@pytest.mark.parametrize("avx512_bf16, amx, want", [(True, False, torch.bfloat16), (False, True, torch.bfloat16),
                                                     (False, False, None)])
def test_auto_precision_trains_in_bf16_on_a_cpu_that_computes_in_it(avx512_bf16, amx, want, monkeypatch):
    """--amp auto on a CPU: bf16 for training where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), float32
    elsewhere; prediction float32 on every CPU; an explicit --amp as typed."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert precision.cpu_computes_bf16() == (want is not None)
    assert precision.amp_dtype("auto", cpu, training=True) == want
    assert precision.amp_dtype("auto", cpu) is None
    assert precision.amp_dtype("off", cpu, training=True) is None
    assert precision.amp_dtype("bf16", cpu) == torch.bfloat16


def test_a_torch_without_the_cpu_probes_trains_in_float32_on_a_cpu(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert not precision.cpu_computes_bf16()
    assert precision.amp_dtype("auto", torch.device("cpu"), training=True) is None
