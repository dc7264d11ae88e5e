"""How train.py runs the model faster on a GPU, apart from the model itself: torch.compile (when it pays
by default, and eager training where Inductor cannot compile) and the training passes replayed as CUDA
graphs. Both wrap the model the training step calls (engine.TrainState.net, which training_net builds, DDP's
wrapper between them under torchrun); checkpoints come from the bare model, so they are the same either way."""
import inspect

import torch
import torch.nn as nn

from precision import autocast
from processes import distributed
from utils import UserError, first_line

# train.py compiles by default (on CUDA) a run that trains at least this many images per process: there
# compiling's minute pays. On an H200, swin_tiny, bf16, batch 128: 56 s to compile, then train.py's loop
# at 3055 img/s against 2047 eager, 161 us saved an image: even after 350,000 (bench/bench_train.py,
# docs/gpu.md: GPU figures). A slower GPU saves more per image, so pays sooner.
COMPILE_PAYS_FROM = 350_000


def compile_pays(device: torch.device, images_per_process: int) -> bool:
    """train.py's --compile when neither it nor --no-compile is given: on a GPU, for a long enough run."""
    return device.type == "cuda" and images_per_process >= COMPILE_PAYS_FROM


def compile_model(net: nn.Module, model: nn.Module, img_size: int, device, fallback: bool = False,
                  cuda_graphs: bool = False) -> nn.Module:
    """torch.compile(net), `net` being the model or its DDP wrapper, for training. Checkpoints are
    saved from the bare `model`, so they hold no `_orig_mod.` keys and resume with or without compiling.
    With `cuda_graphs`, Inductor replays each compiled graph as a CUDA graph (what torch.compile's
    mode="reduce-overhead" sets, here for whichever backend compiles).

    The model's window layouts are built first, by one small eager forward pass: built inside the
    traced graph they would change the model's state and cost a second compile. Training batches are
    full (the loader drops a smaller last one), so one graph serves every epoch; one that a failed file left
    smaller runs eagerly (LargestBatchCompiled). Evaluation runs the
    bare model eagerly: compiling it would cost more than it saves on a validation set of this tool's
    size, and its smaller last batch would compile once more. With `fallback` (compiling that nobody
    asked for), a graph that cannot be compiled runs eagerly instead (inductor_or_eager).
    """
    quiet_cuda_home_probe()
    training = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, img_size, img_size, device=device))
    model.train(training)
    from torch._inductor import config as inductor_config
    inductor_config.triton.cudagraphs = cuda_graphs  # the process's setting: set for this compile either way
    # static shapes: each batch size that compiles gets a graph of its own, not one for any size (LargestBatchCompiled)
    backend = {"backend": inductor_or_eager} if fallback else {}
    return LargestBatchCompiled(torch.compile(net, dynamic=False, **backend))


def training_net(model: nn.Module, cfg, compiled: bool, step_batch: int, device, amp, local_rank: int) -> nn.Module:
    """What a training step calls (engine.TrainState.net), around the bare model: its passes as CUDA graphs
    (--cuda-graphs, eager), captured for batches of `step_batch` images (loaders.training_batch_size); inside DDP's
    wrapper under torchrun, so that the graphs hold the model's passes and DDP's gradient all-reduce stays outside
    them; compiled (`compiled`) outside both."""
    if cfg.cuda_graphs and cfg.grad_checkpointing and not compiled:
        raise UserError("--cuda-graphs with --grad-checkpointing: the backward pass's graph would recompute the "
                        "forward pass with drop-path masks of its own drawing, which nothing checks are the forward's; "
                        "run one of them, or both with --compile (Inductor graphs the recomputation itself)")
    img_size = model.img_size
    net = CudaGraphed(model, step_batch) if cfg.cuda_graphs and not compiled else model
    if isinstance(net, CudaGraphed):  # captured now, at a zero batch of the training batches' shape: before
        # DDP exists (CudaGraphed.capture_ahead), and before the loaders' threads start, whose pinning of batches during
        # a capture at the first batch invalidates it and raises in the pin-memory thread (then in the loop)
        with autocast(device, amp):
            net.capture_ahead(torch.zeros(step_batch, 3, img_size, img_size, device=device))
    if distributed():  # every parameter that trains gets a gradient: no search for unused ones
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[local_rank] if device.type == "cuda" else None)
    if compiled:
        net = compile_model(net, model, img_size, device, fallback=cfg.compile is None, cuda_graphs=cfg.cuda_graphs)
    return net


def quiet_cuda_home_probe() -> None:
    """Inductor builds its CPU code through torch.utils.cpp_extension, which, imported where a CUDA toolkit is
    installed but no GPU is seen (a CUDA build of torch on a CPU machine, as pip installs it), logs "No CUDA
    runtime is found, using CUDA_HOME=..." as it looks for one: nothing a CPU compile needs. Imported here
    first, that one logger raised to errors for the while."""
    import importlib
    import logging
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        importlib.import_module("torch.utils.cpp_extension")
    finally:
        log.setLevel(level)


class LargestBatchCompiled(nn.Module):
    """A net compiled with static shapes that compiles only for a batch larger than any before, and runs
    other sizes on their graph if they have one, else eagerly. Training batches are full, but one whose
    image failed to load is not: compiled for it, Dynamo would recompile the graph with a symbolic batch size
    (another minute) and, checking its newest graph first, train every later batch on that one instead of
    the graph made for their size. Eagerly, that batch costs a step's time once; a run whose first batch is
    the smaller one compiles again for the first full one."""

    def __init__(self, compiled: nn.Module):
        super().__init__()
        self.compiled = compiled
        self.largest = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.largest:
            self.largest = len(x)
            return self.compiled(x)
        with torch.compiler.set_stance("eager_on_recompile"):  # the graph for this size if there is one, else eager
            return self.compiled(x)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # the compiled net's: DDP's no_sync
            return getattr(self.compiled, name)


def inductor_or_eager(graph, example_inputs):
    """torch.compile's own backend, Inductor, or where it fails the graph as it is, eager, said once.
    Inductor's GPU kernels need Triton and a C compiler for their launchers, which slim Docker images
    lack: a run compiled by default there trains as it would have without compiling, not stopping."""
    global _compile_failed
    try:
        return torch._dynamo.lookup_backend("inductor")(graph, example_inputs)
    except Exception as error:  # whatever the compiler raises: eager is always there to fall back on
        if not _compile_failed:
            from torch._inductor import config as inductor_config
            graphs = ", and without its CUDA graphs (--no-compile --cuda-graphs captures them eagerly)" \
                if inductor_config.triton.cudagraphs else ""
            print(f"notice: torch.compile failed ({first_line(error)}); training without it{graphs} "
                  "(--no-compile skips trying)", flush=True)
        _compile_failed = True
        return graph.forward


_compile_failed = False


def without_weight_cache(device: str):
    """The caller's autocast without its weight cache, for a capture and its replays: make_graphed_callables refuses
    the cache (cached casts would outlive the graph's memory)."""
    return torch.autocast(device, torch.get_autocast_dtype(device), enabled=torch.is_autocast_enabled(device),
                          cache_enabled=False)


class CudaGraphed(nn.Module):
    """The model, whose training forward and backward passes each run as one CUDA graph (train.py
    --cuda-graphs, eager): a launch each, where eagerly Python launches the passes' operators one by one,
    772 calls a step for swin_tiny (bench/bench_traffic.py), and a fast GPU waits on it (an H200 at
    batch 128, at 1,131 calls: 43 ms of kernels in a 50 ms step, bench_train.py --profile).

    For CUDA tensors (train.py --cuda-graphs refuses other devices). Captured
    (torch.cuda.make_graphed_callables) at the first training batch of loaders.training_batch_size's shape
    (train.py: at a batch of that shape before DDP wraps it and the loaders start, capture_ahead): batches are all
    that size (the loader drops a smaller last one) but for one with an image that failed to load. Any other
    shape (such a batch, an empty batch's stand-ins), evaluation and passes without a gradient run the model
    as it is. A capture that fails is said once, and training goes on without graphs. The graphs hand
    gradients over in buffers that they overwrite on their next replay: TrainState.keep_grads gives the
    parameters gradient tensors of their own.
    """

    def __init__(self, model: nn.Module, batch: int | None = None):
        super().__init__()
        self.model = model
        # the training batches' size (loaders.training_batch_size): a first batch short of it (an image that failed to
        # load) is not the shape to capture for, which would leave every full batch after it eager
        self.batch = batch
        self.graphed = None  # (a module that replays the graphs, the batch shape they were captured for)
        self.failed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.failed or not (self.model.training and torch.is_grad_enabled()):
            return self.model(x)
        with without_weight_cache(x.device.type):
            if self.graphed is None and (self.batch is None or len(x) == self.batch):
                self.graphed = self.capture(x)
            if self.graphed is None or x.shape != self.graphed[1]:
                return self.model(x)
            return self.graphed[0](x)

    def capture_ahead(self, x: torch.Tensor) -> None:
        """Capture now, for x's shape, under the caller's autocast: train.py, before the loaders' threads
        start (pinning batches, they break a capture) and DistributedDataParallel's wrapper exists. DDP keeps
        each parameter's gradient accumulator from its construction, made on the stream of then (the default
        one); a capture's backward pass on a stream of its own would make that stream wait on the capture, which
        CUDA refuses (under torchrun the H200's capture failed, 2026-11-30, where PyTorch warns of this very
        mismatch); captured first, the accumulators DDP takes are those the capture made, or made after it,
        outside any capture."""
        self.model.train()
        with without_weight_cache(x.device.type):
            self.graphed = self.capture(x)

    def capture(self, x: torch.Tensor):
        # a module of its own: make_graphed_callables replaces the forward of the module it is given, and the
        # model's own stays for evaluation and other shapes
        holder = nn.Module()
        holder.model = self.model
        holder.forward = self.model.forward
        # the capture restricts this thread's CUDA calls alone ("thread_local"): in the default "global" mode, a
        # loader's pin-memory thread pinning a batch (cudaHostAlloc) during it invalidates the capture and raises in
        # that thread, which the loop then raises at that batch (newer torch only; train.py captures before the
        # loaders start, for the versions before)
        mode = {"capture_error_mode": "thread_local"} \
            if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters else {}
        try:
            return torch.cuda.make_graphed_callables(holder, (x.detach().clone(),), allow_unused_input=True,
                                                     **mode), x.shape
        except Exception as error:  # whatever capturing raises: the model runs as it is
            print(f"notice: capturing the training step as CUDA graphs failed ({first_line(error)}); training "
                  "without them", flush=True)
            self.failed = True
            return None
