"""compiling.py on a CPU: when train.py compiles, how a compiled run keeps to one graph and falls back to eager,
and the training passes replayed as CUDA graphs, with a stand-in for the capture (tests/test_cuda.py runs the
real ones on a GPU)."""
import torch

import compiling
import engine
from model import create_model
from script_runs import ROOT
from test_engine import training_losses


def test_compile_by_default_only_where_it_pays():
    """train.py without --compile or --no-compile: compiled on a GPU from COMPILE_PAYS_FROM training images
    per process (ImageNet's epoch), eager for a tutorial run (flower_photos, 10 epochs) and on a CPU."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    pays, threshold = compiling.compile_pays, compiling.COMPILE_PAYS_FROM
    assert pays(cuda, 1_281_167) and pays(cuda, threshold)
    assert not pays(cuda, 10 * 3_303) and not pays(cuda, threshold - 1)
    assert not pays(cpu, 10**9)


def test_compiling_on_a_cpu_says_nothing_of_cuda():
    """A CUDA build of torch on a machine with a CUDA toolkit and no GPU (this one; CI's may have no toolkit, and
    then nothing is said either way) logged "No CUDA runtime is found, using CUDA_HOME=..." as Inductor went to
    build CPU code: compile_model imports that probe quietly first, and leaves its logger as it was."""
    import subprocess
    import sys
    code = ("import logging, compiling; compiling.quiet_cuda_home_probe(); "
            "print(logging.getLogger('torch.utils.cpp_extension').level)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout == "0\n" and "CUDA" not in done.stderr, done.stderr


def test_compiled_training_compiles_once(monkeypatch):
    """The layouts are built before tracing (no recompile for them), and evaluating the bare model
    eagerly between epochs leaves the compiled one alone. Dynamo's eager backend: the guards, no codegen.
    With stochastic depth, each block's own rate: a graph break before drop_path_add made it a frame
    of its own, recompiled for every rate until Dynamo gave up (a list indexed by a bool, under torch
    2.11 on the GPU machine)."""
    from torch._dynamo.utils import counters
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **options: compile_(module, **{**options, "backend": "eager"}))
    torch._dynamo.reset()
    counters.clear()
    net = create_model("swin_micro_patch4_window4_128", num_classes=5, drop_path_rate=0.2)
    compiled = compiling.compile_model(net, net, 64, torch.device("cpu"))
    for epoch in range(3):
        compiled.train()
        for _ in range(2):
            compiled(torch.randn(4, 3, 64, 64)).sum().backward()
        net.eval()
        with torch.no_grad():
            net(torch.randn(3, 3, 64, 64))  # evaluation, with a smaller last batch
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch._dynamo.reset()


def test_a_smaller_training_batch_runs_eagerly_and_the_full_ones_stay_compiled(monkeypatch):
    """A batch left smaller by a file that failed to load: compiled, it cost a graph for a symbolic batch
    size, which Dynamo then ran for every later full batch too. Counted: the graphs made and their runs."""
    runs = []

    def counting(graph, example_inputs):
        runs.append(0)
        index = len(runs) - 1

        def run(*args):
            runs[index] += 1
            return graph.forward(*args)
        return run
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile",
                        lambda module, **options: compile_(module, **{**options, "backend": counting}))
    torch._dynamo.reset()
    try:
        net = create_model("swin_micro_patch4_window4_128", num_classes=5, drop_path_rate=0.0)
        compiled = compiling.compile_model(net, net, 64, torch.device("cpu"))
        compiled.train()
        for size in (4, 4, 3, 4, 4, 2, 4):
            compiled(torch.randn(size, 3, 64, 64)).sum().backward()
        assert runs == [5]  # one graph, run by the five full batches
        # a run (a resume) whose first batch is the smaller one: the full batches get a graph of their own
        runs.clear()
        torch._dynamo.reset()
        compiled = compiling.compile_model(net, net, 64, torch.device("cpu"))
        for size in (3, 4, 4, 3, 2, 4):
            compiled(torch.randn(size, 3, 64, 64)).sum().backward()
        assert runs == [2, 3]  # the first batch's graph, then the full batches' (2 eagerly)
        # the net's attributes through the wrapper (DDP's no_sync, which engine.train_step looks for)
        assert compiled.img_size == net.img_size and not hasattr(compiled, "no_sync")
    finally:
        torch._dynamo.reset()


def test_compiling_by_default_falls_back_to_eager_where_it_fails(monkeypatch, capsys):
    """Where Inductor cannot compile (Triton's launchers need a C compiler, which slim Docker images
    lack), train.py's default compiling trains eagerly, said in one line once (--compile, asked for,
    compiles with Inductor itself and fails as it fails)."""
    def no_c_compiler(graph, example_inputs):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")
    monkeypatch.setattr(torch._dynamo, "lookup_backend", lambda name: no_c_compiler)
    monkeypatch.setattr(compiling, "_compile_failed", False)
    torch._dynamo.reset()
    from torch._inductor import config as inductor_config
    cudagraphs = inductor_config.triton.cudagraphs  # put back by hand: pytest 9.2's monkeypatch, undoing a setattr
    try:  # on a config of torch's, deleted the setting, and later compiles in the process failed
        torch.manual_seed(0)
        net = create_model("swin_micro_patch4_window4_128", num_classes=5, drop_path_rate=0.0)
        x = torch.randn(2, 3, 64, 64)
        want = net(x)
        compiled = compiling.compile_model(net, net, 64, torch.device("cpu"), fallback=True)
        for _ in range(2):
            got = compiled(x)
            got.sum().backward()
            torch.testing.assert_close(got, want)
        out = capsys.readouterr().out
        assert out.count("notice: torch.compile failed") == 1 and "Failed to find C compiler" in out
        assert "--no-compile" in out and len(out.strip().splitlines()) == 1 and "CUDA graphs" not in out
        # with --cuda-graphs, which Inductor would have captured: the notice says they are lost too
        monkeypatch.setattr(compiling, "_compile_failed", False)
        torch._dynamo.reset()
        compiling.compile_model(net, net, 64, torch.device("cpu"), fallback=True, cuda_graphs=True)(x)
        assert "without its CUDA graphs (--no-compile --cuda-graphs captures them eagerly)" in capsys.readouterr().out
        # Inductor's setting is the process's: a later compile without them does not inherit them
        compiling.compile_model(net, net, 64, torch.device("cpu"), fallback=True)
        assert inductor_config.triton.cudagraphs is False
    finally:
        inductor_config.triton.cudagraphs = cudagraphs
        torch._dynamo.reset()


def test_cuda_graphs_that_cannot_be_captured_train_as_without_them(monkeypatch, capsys):
    """A capture that fails (an operation that CUDA graphs do not take, a driver's refusal): said once, and
    the steps are the eager ones, with the gradients zeroed rather than freed."""
    def refused(*args, **kwargs):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore of it")
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", refused)
    want, want_weights, _ = training_losses(None, steps=3, size=64)
    capsys.readouterr()
    losses, weights, state = training_losses(None, steps=3, size=64, cuda_graphs=True)
    out = capsys.readouterr().out
    assert out.count("notice: capturing the training step as CUDA graphs failed (CUDA error: operation not "
                     "permitted when stream is capturing); training without them") == 1, out
    assert losses == want and torch.equal(weights, want_weights)
    assert state.keep_grads and all(p.grad is not None and not p.grad.any() for p in state.model.parameters())


def graphs_stand_in(module, sample_args, allow_unused_input=False):
    """torch.cuda.make_graphed_callables as its graphs hand gradients over, on a CPU: the module's pass as
    one autograd node whose backward writes the parameters' gradients into the same buffers every time
    and returns them, as a replayed graph does."""
    params = [p for p in module.parameters() if p.requires_grad]
    buffers = [torch.zeros_like(p) for p in params]

    class Replay(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *weights):
            with torch.enable_grad():
                ctx.out = module.forward(x)
            return ctx.out.detach()

        @staticmethod
        def backward(ctx, grad):
            for buffer, g in zip(buffers, torch.autograd.grad(ctx.out, params, grad)):
                buffer.copy_(g)
            return (None, *(buffer.detach() for buffer in buffers))
    return lambda x: Replay.apply(x, *params)


def test_cuda_graphs_steps_take_every_accumulated_batch(monkeypatch):
    """--cuda-graphs --accum-steps 2: the step averages both batches' gradients, though the graphs hand
    each batch's over in the same buffers (which, taken as the parameters' .grad, the second batch's
    backward would overwrite: pytorch/pytorch#181723)."""
    import copy
    import train
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", graphs_stand_in)
    cfg = train.build_parser().parse_args(["--accum-steps", "2", "--warmup-epochs", "0", "--epochs", "1",
                                           "--cuda-graphs"])
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5, drop_path_rate=0.0)
    reference = copy.deepcopy(net)
    state = engine.build_train_state(cfg, net, compiling.CudaGraphed(net), torch.device("cpu"), None, 1, [1] * 5)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator),
                torch.randint(0, 5, (2,), generator=generator), ["a", "b"], []) for _ in range(2)]
    for images, labels, _, _ in batches:  # the two batches' gradients, summed as autograd sums them
        engine.loss_fn(reference(state.normalize(images)).float(), labels, cfg.label_smoothing).backward()
    want = torch.cat([p.grad.flatten() for p in reference.parameters()]) / 2
    stepped = []
    monkeypatch.setattr(engine, "optimizer_step", lambda state, cfg: stepped.append(
        torch.cat([p.grad.flatten() for p in net.parameters()]).clone()))
    engine.train_one_epoch(state, batches, cfg, show_progress=False)
    assert state.net.graphed is not None  # the stand-in was captured and replayed
    assert len(stepped) == 1 and torch.allclose(stepped[0], want, atol=1e-6)


def test_cuda_graphs_captured_before_ddp_give_its_gradients(monkeypatch, tmp_path):
    """Under torchrun train.py captures the graphs before DistributedDataParallel wraps them
    (CudaGraphed.capture_ahead: captured inside DDP, CUDA refused the capture on the H200): DDP's forward
    then replays them, and its all-reduce hands on the gradients the replays give, as the eager step's. One
    gloo process, the graphs' stand-in."""
    import copy
    import torch.distributed as dist
    replays = []

    def counted(module, sample_args, **kwargs):
        replay = graphs_stand_in(module, sample_args, **kwargs)
        return lambda x: replays.append(x.shape) or replay(x)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", counted)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = create_model("swin_micro_patch4_window4_128", num_classes=5, drop_path_rate=0.0)
        reference = copy.deepcopy(net)
        graphed, x = compiling.CudaGraphed(net), torch.randn(2, 3, 32, 32)
        graphed.capture_ahead(x)
        assert graphed.graphed is not None and graphed.graphed[1] == x.shape and not graphed.failed
        torch.nn.parallel.DistributedDataParallel(graphed)(x).sum().backward()
        reference(x).sum().backward()
        assert replays == [x.shape]  # DDP's forward ran the graphs
        for (name, p), q in zip(net.named_parameters(), reference.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    finally:
        dist.destroy_process_group()


def test_graphs_captured_ahead_for_the_batches_the_step_takes():
    """Under torchrun train.py captures the graphs before the first batch (CudaGraphed.capture_ahead), for the
    shape training_batch_size gives: a process's share of the training set smaller than --batch-size is one batch
    of that share (loaders.EpochBatches), and mixup drops an odd batch's last image. Captured for --batch-size
    there, every batch would run eagerly, unsaid."""
    import train
    from loaders import build_train_loader, training_batch_size
    for images, processes, batch, mixup in ((80, 1, 128, "0"), (80, 2, 16, "0"), (85, 1, 128, "0.8"),
                                            (85, 2, 128, "0"), (170, 2, 128, "0.8")):
        cfg = train.build_parser().parse_args(["--batch-size", str(batch), "--mixup", mixup, "--workers", "0"])
        samples = [(f"{i}.jpg", i % 5) for i in range(images)]
        _, epoch_batches = build_train_loader(cfg, samples, 32, 0, processes)
        first = len(next(iter(epoch_batches)))
        assert training_batch_size(cfg, epoch_batches) == (first - first % 2 if mixup != "0" else first)


def test_cuda_graphs_are_captured_for_a_full_batch_not_a_short_first_one(monkeypatch):
    """A first batch short of the training batches' size (an image that failed to load) runs eagerly and the graphs
    are captured at the first full one: captured for the short one, every full batch after it ran eagerly, unsaid."""
    replays = []

    def counted(module, sample_args, **kwargs):
        replay = graphs_stand_in(module, sample_args, **kwargs)
        return lambda x: replays.append(len(x)) or replay(x)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", counted)
    torch.manual_seed(0)
    graphed = compiling.CudaGraphed(create_model("swin_micro_patch4_window4_128", num_classes=5), batch=4)
    for size in (3, 4, 4):
        graphed(torch.randn(size, 3, 32, 32)).sum().backward()
    assert graphed.graphed[1][0] == 4 and replays == [4, 4]


def test_cuda_graphs_capture_leaves_the_loaders_threads_free(monkeypatch):
    """The capture restricts its own thread's CUDA calls alone (capture_error_mode="thread_local", where torch has
    it): in the default "global" mode a DataLoader's pin-memory thread pinning a batch during the capture
    (cudaHostAlloc) invalidates it, and the error raised in that thread ends the run at that batch."""
    modes = []

    def stand_in(module, sample_args, allow_unused_input=False, capture_error_mode="global"):
        modes.append(capture_error_mode)
        return graphs_stand_in(module, sample_args, allow_unused_input)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", stand_in)
    graphed = compiling.CudaGraphed(create_model("swin_micro_patch4_window4_128", num_classes=5), batch=2)
    graphed.capture_ahead(torch.zeros(2, 3, 32, 32))
    assert graphed.graphed is not None and modes == ["thread_local"]
