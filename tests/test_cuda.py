"""The GPU path: mixed precision, the CUDA attention kernels, torch.compile, CUDA graphs, and train.py, resume,
torchrun and predict.py on a GPU. Skipped where CUDA is absent (CI has none); a few minutes on one GPU."""
import math
import os
import subprocess
import sys

import pytest
import torch

import attention
import checkpoints
import compiling
import data
import engine
import evaluation
import kernels
import loaders
import optim
import processes
import train
from interpreted_kernels import check_cosine_attention, check_layer_norm, check_window_attention, count_kernel_calls
from model import create_model
from test_data import check_device_decoding
from test_engine import training_losses
from test_attention import attention_run
from test_precision import check_held_casts_go, check_inference_casts_held, check_weights_cast_once
from script_runs import FAST, ROOT, metrics, run_train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
GPU = ["--device", "cuda"]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12)).item()


def test_fused_adamw_on_cuda():
    net = create_model("swin_micro_patch4_window4_128", num_classes=5).cuda()
    cfg = train.build_parser().parse_args([])
    assert optim.build_optimizer(net, cfg).defaults["fused"]
    # the measured choice is looked up by CUDA's device type and by whether a gradient is wanted; kernels.py's
    # attention, CUDA's choice for inference, builds and runs on the GPU machines here (kernels.attention_runs)
    x = torch.zeros(8, 49, 96, device="cuda")  # (windows, tokens, channels)
    assert attention.choose_attention(x, 0.0) == attention.CHOSEN_ATTENTION[("cuda", "inference")] == "triton"
    assert attention.choose_attention(x.requires_grad_(), 0.0) == attention.CHOSEN_ATTENTION[("cuda", "training")]
    # and its LayerNorm, the default for training on CUDA (kernels.layer_norm_runs)
    assert kernels.fused_layer_norm_applies(x) and kernels.layer_norm_runs(x.device)


def test_the_process_group_backend_follows_the_device(monkeypatch):
    """torchrun ... --device cpu on a GPU machine: gloo, which reduces CPU tensors; on the GPU, NCCL."""
    started = []
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, timeout: started.append(backend))
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    assert processes.init_distributed("cpu")[3] == torch.device("cpu")
    assert processes.init_distributed("cuda")[3] == torch.device("cuda:0")
    assert started == ["gloo", "nccl"]


def test_a_batch_for_the_gpu_decoder_is_pinned_by_the_loader():
    """The loader's pinning thread calls an EncodedBatch's pin_memory (it passes other objects as they are)."""
    batch = data.EncodedBatch(torch.zeros(10, dtype=torch.uint8), [10], [None], torch.zeros(1, 3, 8, 8,
                              dtype=torch.uint8), 8, "bilinear")
    pinned = torch.utils.data._utils.pin_memory.pin_memory(batch)
    assert isinstance(pinned, data.EncodedBatch) and pinned.decoded.is_pinned()


def test_items_drawn_in_the_training_process_leave_the_gpu_generator_alone():
    """--workers 0: each item seeds its augmentation, which must not reseed dropout's generator on the GPU."""
    before = torch.cuda.get_rng_state()
    assert loaders.SeededDataset(["item"])[(0, 123)] == "item"
    assert torch.equal(torch.cuda.get_rng_state(), before)


@pytest.mark.parametrize("version", [1, 2])
def test_bf16_and_fp16_steps_are_finite_and_track_fp32(version):
    """CUDA autocast's own rules (LayerNorm in float32, which model.LayerNorm keeps in bf16 where that changes
    nothing that matters; V1's residual stream in bf16, V2's in float32) on train.py's step."""
    fp32_losses, fp32_weights, _ = training_losses(None, "cuda", version=version)
    for amp in (torch.bfloat16, torch.float16):
        losses, weights, state = training_losses(amp, "cuda", version=version)
        assert all(torch.isfinite(torch.tensor(losses))), (amp, losses)
        assert state.scaler.is_enabled() == (amp == torch.float16)  # loss scaling for fp16 only
        assert losses[-1] < losses[0] * 0.8, (amp, losses)  # it learns the batch
        assert abs(losses[0] - fp32_losses[0]) < 0.01 * fp32_losses[0], (amp, losses, fp32_losses)
        # fp16's first steps may be skipped while the loss scale comes down; bf16 takes every one
        assert abs(losses[-1] - fp32_losses[-1]) < 0.15 * fp32_losses[0], (amp, losses, fp32_losses)
        if amp == torch.bfloat16:
            assert relative_error(weights, fp32_weights) < 0.02


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("version", [1, 2])
def test_stages_cast_their_weights_once_on_the_gpu(version, dtype, monkeypatch):
    """precision.CAST_ONCE under CUDA's autocast: one cast kernel a stage each way, autocast's results to the bit."""
    check_weights_cast_once(version, False, "cuda", dtype, monkeypatch)


def test_inference_holds_its_weight_casts_on_the_gpu(monkeypatch):
    """precision.HOLD_INFERENCE_CASTS under CUDA's autocast: made once, held while the weights stay, made again
    after they change."""
    check_inference_casts_held("cuda", monkeypatch)


def test_held_casts_go_with_the_fused_optimizer_step_on_the_gpu():
    check_held_casts_go("cuda")


@pytest.mark.parametrize("version", [1, 2])
def test_triton_layer_norm_matches_torch_on_the_gpu(version, monkeypatch):
    """kernels.py compiled for the GPU: against float64 at swin_tiny's narrowest and widest rows and CUDA
    autocast's types; then train.py's bf16 step with every LayerNorm through it tracks F.layer_norm's."""
    for rows, width in ((3136, 96), (49, 1536)):
        for dtype, out_dtype in ((torch.float32,) * 2, (torch.bfloat16,) * 2, (torch.bfloat16, torch.float32)):
            check_layer_norm(rows, width, dtype, out_dtype, "cuda")
    monkeypatch.setattr(kernels, "LAYER_NORM", "torch")
    want_losses, want_weights, _ = training_losses(torch.bfloat16, "cuda", version=version)
    calls = count_kernel_calls(monkeypatch)
    monkeypatch.setattr(kernels, "LAYER_NORM", "auto")  # the default: taken where layer_norm_runs, as here
    losses, weights, _ = training_losses(torch.bfloat16, "cuda", version=version)
    assert calls
    # both in bf16, each LayerNorm rounded a little differently (float32 affine parameters here)
    assert all(abs(a - b) < 0.02 * want_losses[0] for a, b in zip(losses, want_losses)), (losses, want_losses)
    assert relative_error(weights, want_weights) < 0.01


def errors(run, reference) -> tuple:
    """(output's, all gradients', each parameter's gradient's) relative error of an attention_run."""
    (out, grads), (want_out, want_grads) = run, reference
    flat = [torch.cat([g.flatten() for g in gs.values()]) for gs in (grads, want_grads)]
    return (relative_error(out, want_out), relative_error(*flat),
            {name: relative_error(grads[name], want_grads[name]) for name in grads})


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("kind", ["sdpa", "flex", "triton"])
def test_cuda_attention_agrees_with_plain_forward_and_backward(kind, version):
    """Each CUDA kernel against the plain path, shifted windows and padding included (72 px: maps of
    18, 9, 5 and 3 tokens), outputs and every gradient. In fp32 they agree to rounding; under bf16
    autocast each is within twice the error that the plain path itself makes in bf16 (a small
    parameter's gradient, such as V2's logit_scale, is off by over 10% in bf16 whatever the kernel)."""
    reference = attention_run("plain", version, "cuda", None)
    out, grads, per_parameter = errors(attention_run(kind, version, "cuda", None), reference)
    assert out < 1e-4 and grads < 1e-4 and max(per_parameter.values()) < 1e-3, (out, grads, per_parameter)
    base_out, base_grads, base_parameter = errors(attention_run("plain", version, "cuda", torch.bfloat16), reference)
    out, grads, per_parameter = errors(attention_run(kind, version, "cuda", torch.bfloat16), reference)
    assert out <= max(2 * base_out, 1e-2) and grads <= max(2 * base_grads, 2e-2), (out, base_out, grads, base_grads)
    for name, error in per_parameter.items():
        assert error <= max(3 * base_parameter[name], 0.05), (name, error, base_parameter[name])


def test_triton_attention_matches_float64_at_swin_shapes():
    """kernels.py's attention compiled for the GPU, against float64: swin_tiny's stage 1 at batch 128 (8192
    windows of 49 tokens, 3 heads, shifted: backward's programs each sum the bias gradient over a run of
    windows), unpacked and packed (V1's), and V2's 8 x 8 windows, unpacked and packed (inference, q and k normalised
    in the kernel), in float32 (exact products: TF32 off), bf16 and fp16 (--amp fp16)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            check_window_attention(128, 64, 3, 49, dtype, True, "cuda")
            check_window_attention(128, 64, 3, 49, dtype, True, "cuda", packed=True)  # V1's, read in place from qkv
            check_window_attention(16, 16, 6, 64, dtype, False, "cuda")
            check_cosine_attention(16, 16, 6, 64, dtype, True, "cuda")  # V2's packed inference, shifted
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def test_sdpa_takes_more_windows_than_the_cuda_kernel_does_at_once():
    """Past 65535 windows CUDA's sdpa fails in backward with a bias (swin_tiny's stage 1 at batch 2097, on
    the H200): window_attention runs it in chunks. In bf16, within twice the plain path's own bf16 error
    against the plain path in fp32, outputs and gradients."""
    torch.manual_seed(0)
    b_, nw, heads, n, d = 1100 * 64, 64, 3, 49, 32
    inputs = [torch.randn(b_, heads, n, d, device="cuda") for _ in range(3)] + [torch.randn(heads, n, n, device="cuda")]
    mask = torch.zeros(nw, n, n, device="cuda").masked_fill(torch.rand(nw, n, n, device="cuda") < 0.2, -100.0)

    def run(kind, dtype):
        *qkv, bias = [x.to(dtype if x.dim() == 4 else torch.float32).requires_grad_() for x in inputs]
        out = attention.window_attention(*qkv, bias, mask, 0.0, kind, scale=d ** -0.5)
        return [out, *torch.autograd.grad(out.float().square().mean(), [*qkv, bias])]

    reference = run("plain", torch.float32)
    plain = [relative_error(got, want) for got, want in zip(run("plain", torch.bfloat16), reference)]
    sdpa = [relative_error(got, want) for got, want in zip(run("sdpa", torch.bfloat16), reference)]
    assert all(s <= max(2 * p, 1e-2) for s, p in zip(sdpa, plain)), (sdpa, plain)


def test_jpegs_decoded_on_the_gpu_give_the_workers_crops(tmp_path):
    """--decode device with nvJPEG: every kind of file, the same crops as the workers make."""
    check_device_decoding(tmp_path, "cuda")


@pytest.mark.parametrize("kind", [None, "triton"])  # CUDA's choice of attention; kernels.py's operators in the graph
def test_compiled_model_agrees_with_eager(kind, monkeypatch):
    monkeypatch.setattr(attention, "ATTENTION", kind)
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5, drop_path_rate=0.0).cuda()
    x = torch.randn(8, 3, 96, 96, device="cuda")
    want = net(x)
    want.square().sum().backward()
    want_grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    torch._dynamo.reset()
    compiled = compiling.compile_model(net, net, 96, torch.device("cuda"))
    got = compiled(x)
    got.square().sum().backward()
    assert relative_error(got, want) < 1e-3
    for name, p in net.named_parameters():
        assert relative_error(p.grad, want_grads[name]) < 1e-2, name


@pytest.mark.parametrize("version", [1, 2])
def test_cuda_graphs_step_as_eager_does(version, capsys):
    """--cuda-graphs: the forward and backward passes are captured (no notice) and replay train.py's eager
    step: the same losses and weights, within bf16's rounding."""
    want, want_weights, _ = training_losses(torch.bfloat16, "cuda", version=version)
    capsys.readouterr()
    losses, weights, state = training_losses(torch.bfloat16, "cuda", version=version, cuda_graphs=True)
    assert "notice" not in capsys.readouterr().out and state.net.graphed is not None
    assert max(abs(a - b) for a, b in zip(losses, want)) < 0.01 * want[0], (losses, want)
    assert relative_error(weights, want_weights) < 0.01


def test_a_host_copy_on_the_gpu_holds_the_values_of_its_time():
    """engine.HostCopy's copy is queued behind the work that made the values and ahead of what changes them."""
    sums = torch.zeros(3, dtype=torch.float64, device="cuda")
    busy = torch.randn(4096, 4096, device="cuda")
    for _ in range(4):
        busy = busy @ busy / 64  # the GPU is still at work when the copy is queued
    sums += 1  # queued behind that work, as the copy is
    copy = engine.HostCopy(sums)
    sums += 1
    assert copy.values.is_pinned() and copy.read() == [1.0, 1.0, 1.0] and sums.tolist() == [2.0, 2.0, 2.0]


def test_cuda_graphs_draw_new_drop_path_masks_at_each_replay(capsys):
    """Stochastic depth inside the captured forward pass (every real run has it: swin_tiny's 0.2): each replay
    draws masks of its own, as eager steps do, not the capture's again."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5, drop_path_rate=0.5).cuda().train()
    graphed, x, outs = compiling.CudaGraphed(net), torch.randn(4, 3, 64, 64, device="cuda"), []
    for _ in range(3):
        with torch.autocast("cuda", torch.bfloat16):
            out = graphed(x)
        out.float().sum().backward()
        outs.append(out.detach().float().clone())
    assert graphed.graphed is not None and "notice" not in capsys.readouterr().out
    assert not torch.equal(outs[1], outs[2]) and all(out.isfinite().all() for out in outs)


def test_cuda_graphs_with_grad_checkpointing_eagerly_is_refused(flowers, tmp_path):
    with pytest.raises(train.UserError, match="--cuda-graphs with --grad-checkpointing"):
        train.main(["--data-path", str(flowers), *FAST, *GPU, "--epochs", "1", "--cuda-graphs",
                    "--grad-checkpointing", "--no-compile", "--output", str(tmp_path)])


def test_train_py_with_cuda_graphs_trains_evaluates_and_resumes(flowers, tmp_path):
    """train.py --cuda-graphs in one process, as a user runs it: captured at the first batch (no notice that it
    failed), evaluated eagerly after each epoch, stopped, resumed with the graphs captured again; with --ema and
    --accum-steps 2, whose gradients the graphs hand over in buffers they overwrite (TrainState.keep_grads). What
    has to hold before --cuda-graphs can become the default on CUDA."""
    args = ["--data-path", flowers, *FAST, *GPU, "--epochs", "2", "--cuda-graphs", "--no-compile", "--ema",
            "--accum-steps", "2", "--output", tmp_path, "--name", "graphed",
            "--workers", "2"]  # loader threads pinning batches, as a user's run has (FAST's 0 has none)
    first = run_train(*args, "--stop-after-epochs", "1", timeout=600)
    assert "CUDA graphs" in first.stdout and "graphs failed" not in first.stdout, first.stdout
    second = run_train("--resume", tmp_path / "graphed", timeout=600)
    assert "graphs failed" not in second.stdout, second.stdout
    rows = metrics(tmp_path / "graphed")
    assert len(rows) == 2 and all(math.isfinite(float(row["loss_train"])) for row in rows)
    ckpt = torch.load(tmp_path / "graphed" / "last.pth", weights_only=True)
    assert all(value.isfinite().all() for value in ckpt["model"].values() if value.is_floating_point())


def test_a_checkpoints_snapshot_from_the_gpu_holds_the_values_of_its_time():
    """checkpoints.host_copy, the background checkpoint's snapshot: copies queued into pinned memory without a wait
    each, complete when it returns, and unchanged by the training steps after it."""
    busy = torch.randn(4096, 4096, device="cuda")
    for _ in range(4):
        busy = busy @ busy / 64
    weights = {"a": torch.full((1000, 1000), 2.0, device="cuda"), "b": [torch.arange(5, device="cuda"), 3]}
    snapshot = checkpoints.host_copy(weights)
    weights["a"] += 1
    assert snapshot["a"].device.type == "cpu" and bool((snapshot["a"] == 2.0).all())
    assert snapshot["b"][0].tolist() == list(range(5)) and snapshot["b"][1] == 3
    assert checkpoints.all_finite({"a": weights["a"]}) and not checkpoints.all_finite({"a": busy * float("nan")})


def test_batches_copied_on_the_side_stream_arrive_whole():
    """data.to_device copies a pinned batch on a side stream that the training stream waits for, while the
    training stream is still busy; the memory of a batch it still uses is not written by the next copy."""
    sources = [torch.randint(0, 256, (64, 3, 128, 128), dtype=torch.uint8).pin_memory() for _ in range(6)]
    labels = torch.arange(64).pin_memory()
    busy, sums = torch.randn(4096, 4096, device="cuda"), []
    for source in sources:
        busy = busy @ busy / 64  # the training stream stays behind: each copy runs ahead of its use
        images, got_labels, _ = data.to_device(source, labels, [""] * 64, torch.device("cuda"))
        sums.append(images.double().sum() + got_labels.sum())
        del images, got_labels  # freed on the training stream with its sum still queued
    assert [total.item() for total in sums] == [source.double().sum().item() + 2016 for source in sources]


def test_the_training_loop_waits_for_the_gpu_only_at_the_epochs_end():
    """Per batch, train.py's loop waits for the GPU only for its flags, by an event (engine.HostCopy) that lets
    the GPU run the queued backward pass meanwhile; the progress bar's figures come the same way, and
    evaluation reads nothing back before its end. CUDA's sync debug mode counts the other waits (.item(),
    .tolist(), blocking copies): an epoch of 23 batches makes as many as one of 3, an evaluation of 6 as
    one of 2, those of their ends (and some: the count itself is checked)."""
    import warnings
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5).cuda()
    cfg = train.build_parser().parse_args(["--ema", "--warmup-epochs", "0", "--epochs", "1"])
    state = engine.build_train_state(cfg, net, net, torch.device("cuda"), torch.bfloat16, 30, [1] * 5)
    batches = [(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8).pin_memory(),
                torch.randint(0, 5, (8,)).pin_memory(), [f"{i}.jpg" for i in range(8)], []) for _ in range(23)]
    settings = (data.build_normalize(), 5, torch.device("cuda"), torch.bfloat16)
    engine.train_one_epoch(state, batches[:2], cfg)  # cuDNN's search and CUDA's lazy starts, once
    evaluation.evaluate(net, batches[:1], *settings)  # and inference's attention kernel tried once

    def waits(run, *args) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run(*args)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        # "called a synchronizing CUDA operation"; not the mode's own first warning, that it is a prototype which
        # "does not yet detect all synchronizing operations"
        return sum(str(warning.message).startswith("called a synchronizing") for warning in caught)

    assert waits(engine.train_one_epoch, state, batches[:3], cfg) == waits(engine.train_one_epoch, state, batches,
                                                                           cfg) > 0
    assert waits(evaluation.evaluate, net, batches[:2], *settings) == waits(evaluation.evaluate, net, batches[:6],
                                                                          *settings) > 0


@pytest.mark.parametrize("flag, said", [("--compile", "compiled"), ("--cuda-graphs", "CUDA graphs")],
                         ids=["compiled", "graphed"])
def test_torchrun_on_one_gpu_uses_nccl_and_compiles_or_graphs(flowers, tmp_path, flag, said):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29531",
         "train.py", "--data-path", str(flowers), *FAST, *GPU, "--epochs", "1", flag, "--output",
         str(tmp_path), "--name", "ddp"], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x1 (DDP, nccl)" in result.stdout and said in result.stdout
    ckpt = torch.load(tmp_path / "ddp" / "last.pth", weights_only=True)
    assert not any(k.startswith(("_orig_mod.", "module.", "model.")) for k in ckpt["model"])  # the bare model's
    # the run trains on without what failed, and says so: the H200's eager capture under DDP did (2026-11-30), before
    # train.py captured ahead of DDP (CudaGraphed.capture_ahead), which this checks; the notice names CUDA's error
    failed = [line for line in result.stdout.splitlines() if "torch.compile failed" in line or "graphs failed" in line]
    assert not failed, failed[0]


def test_train_resume_and_predict_on_the_gpu(flowers, tmp_path):
    """train.py on a GPU, resumed with the JPEGs decoded on the GPU, and predict.py classifies with the
    result, drawing its class activation map (--cam). Eager: train.py's compiled path on the GPU is the
    torchrun test's (one compile, not two, keeps this file within 5 minutes); compiling, then resuming
    without, is test_resume's on the CPU."""
    args = ["--data-path", flowers, *FAST, *GPU, "--epochs", "2", "--output", tmp_path, "--name", "gpu"]
    first = subprocess.run([sys.executable, "train.py", *map(str, args), "--stop-after-epochs", "1"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "on cuda:0" in first.stdout and "amp bf16" in first.stdout
    second = subprocess.run([sys.executable, "train.py", "--resume", tmp_path / "gpu", "--decode",
                             "device", "--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    rows = metrics(tmp_path / "gpu")
    assert len(rows) == 2 and rows[1]["data_failed_images"] == "0"
    ckpt = torch.load(tmp_path / "gpu" / "best.pth", weights_only=True)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
    photo = sorted(flowers.glob("tulips/*.jpg"))[0]
    done = subprocess.run([sys.executable, "predict.py", photo, "--weights", tmp_path / "gpu", "--device", "cuda",
                           "--save-vis", tmp_path / "vis", "--cam"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on cuda" in done.stderr and "1. " in done.stdout
    assert (tmp_path / "vis" / f"{photo.stem}.png").is_file()  # with the map of a bf16 pass on the GPU


def check_exports_on(device: str, tmp_path) -> None:
    """predict.py --export on `device`: each format traced there and checked against the model before it is
    written (export.check_program raises where the logits differ); the .pt2 then runs there, as predict.py
    loads it, with the model's logits."""
    from pathlib import Path
    from export import export_onnx, export_pt2, export_torchscript, load_program
    from weights import Classifier
    torch.manual_seed(0)
    model = create_model("swin_micro_patch4_window4_128", num_classes=5, img_size=64).eval().to(device)
    clf = Classifier(model, list("abcde"), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.875, "center", "bilinear",
                     Path("ckpt.pth"))
    for name, export in (("m.pt2", export_pt2), ("m.pt", export_torchscript), ("m.onnx", export_onnx)):
        export(clf, tmp_path / name, torch.device(device))
        assert (tmp_path / name).is_file(), name
    program = load_program(tmp_path / "m.pt2")
    assert program.device.type == torch.device(device).type
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (clf.mean, clf.std))
    with torch.no_grad():
        want = model((images.to(device) / 255 - mean) / std)
    assert relative_error(program(images), want) < 1e-4


def test_exports_made_on_the_gpu_give_the_model_logits(tmp_path, export_packages):
    check_exports_on("cuda", tmp_path)
