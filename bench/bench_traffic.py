"""What a training step moves through memory, operator by operator: model.py against timm's Swin.

    python bench/bench_traffic.py                                   # swin_tiny at 224
    python bench/bench_traffic.py --model swinv2_tiny_patch4_window8_256 --top 20
    python bench/bench_traffic.py --compiled                        # the step compiled, as Inductor counts it
    TRITON_INTERPRET=1 python bench/bench_traffic.py --compiled --attention triton   # with kernels.py's attention

On a GPU a Swin training step is mostly not matmul work: swin_tiny does about 27 GFLOP an image in
its matmuls, a few milliseconds of a batch of 128 at an H100's bf16 peak, against a step of about
60 ms measured eager on an H200. The rest goes to operators that read and write whole activations
(casts, copies, normalisation, softmax, GELU, adds, gathers) and to launching them. This counts, for
one forward and backward pass under bf16 autocast, every operator's calls, the bytes of its inputs
and outputs (views, which move nothing, left out) and the matmuls' FLOPs: a device-independent
account of what a memory-bound step moves, and of where the two models differ. It runs on the CPU,
so that a machine without a GPU can read it: CPU autocast stands in for CUDA's, with CUDA's rule for
LayerNorm applied (float32, where CPU autocast leaves it in bf16), and both models take the plain
attention path (matmul, softmax, matmul), which is timm's; or ours kernels.py's fused kernels
(--attention triton, run by Triton's interpreter), counted as their operators' inputs and outputs.
Figures are per image of a --batch-size batch; bytes a kernel finds in a cache are counted as moved.
`bench_train.py --profile` gives the GPU's own times.

With --compiled, the same step under torch.compile instead, as Inductor counts it: the bytes its
kernels read and write (its own metric, made when a graph is compiled, after fusion) and the kernels it
generates, on its CPU backend (its fusions follow the same scheduler as on a GPU, not the same code).
Some minutes a model on 2 cores. With --attention triton too, ours' graph holds kernels.py's attention as the
custom operators they are, which Inductor counts as it counts a library call: their inputs and outputs, whole
(some 15 minutes, the kernels interpreted).
"""
import argparse
import collections
import logging
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_train import timm_twin  # noqa: E402  (bench/ is on the path)
from common import print_header  # noqa: E402
from config import COUNT, POSITIVE_INT  # noqa: E402
import attention  # noqa: E402
import compiling  # noqa: E402
import kernels  # noqa: E402
import model as swin  # noqa: E402

# operators that return a view of their input, or allocate without writing: no traffic
NO_TRAFFIC = {"view", "_unsafe_view", "t", "transpose", "permute", "expand", "unsqueeze", "squeeze", "select",
              "slice", "unbind", "split", "split_with_sizes", "as_strided", "alias", "detach", "diagonal",
              "unflatten", "lift_fresh", "empty", "empty_like", "new_empty", "empty_strided"}


class OperatorTraffic(TorchDispatchMode):
    """Calls, bytes read and written, and matmul FLOPs per operator, for what runs inside it."""

    def __init__(self):
        super().__init__()
        self.calls, self.bytes, self.flops = collections.Counter(), collections.Counter(), collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if name in NO_TRAFFIC:
            return out
        # copy_ writes its destination without reading it: its source in, the destination out
        tensors = [args[1], out] if name == "copy_" else list(tensors_in((args, kwargs, out)))
        self.calls[name] += 1
        self.bytes[name] += sum(t.numel() * t.element_size() for t in tensors)
        if name in ("mm", "bmm", "addmm", "baddbmm"):
            a, b = args[-2:]  # (..., m, k) @ (..., k, n): 2 m k n multiply-adds' FLOPs per matrix
            self.flops[name] += 2 * a.numel() * b.shape[-1]
        return out


class CudaLayerNorm(TorchFunctionMode):
    """CUDA's autocast runs layer_norm in float32 (its output, and so the residual stream it starts, in
    float32); CPU autocast leaves it in bf16. This applies CUDA's rule, so that the count is the GPU's."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.layer_norm and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return func(args[0].float(), *args[1:], **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        yield from tensors_in(list(value.values()))


def random_batch(net, batch_size: int, img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch_size, 3, img_size, img_size), torch.randint(0, net.num_classes, (batch_size,))


def training_pass(net, x: torch.Tensor, y: torch.Tensor) -> None:
    """Forward under bf16 autocast, label-smoothed loss, backward."""
    with torch.autocast("cpu", torch.bfloat16):
        logits = net(x)
    F.cross_entropy(logits.float(), y, label_smoothing=0.1).backward()


def count_step(net, batch_size: int, img_size: int) -> OperatorTraffic:
    """One training forward and backward pass (label-smoothed loss, bf16 autocast) under the counter, after
    one uncounted: what a first pass does once (ours builds its window layouts) is not a step's."""
    x, y = random_batch(net, batch_size, img_size)
    counter = OperatorTraffic()
    for counted in (nullcontext(), counter):
        with counted, CudaLayerNorm():
            training_pass(net, x, y)
        net.zero_grad(set_to_none=True)  # as the optimizer step leaves them: the next backward pass makes new ones
    return counter


def count_compiled(net, batch_size: int, img_size: int) -> tuple[int, int, int]:
    """(bytes, bytes of library calls, kernels) of count_step's pass with the model compiled, as Inductor counts
    them when it compiles the forward and backward graphs (torch._inductor.metrics, kept only while its metrics
    log is on: turned on here with its records dropped, a dict of every fused node per graph). Library calls
    are the kernels Inductor does not generate: matmuls and convolutions."""
    from torch._functorch import config as autograd_config
    from torch._inductor import config as inductor_config, metrics
    from torch._inductor.scheduler import ExternKernelSchedulerNode
    x, y = random_batch(net, batch_size, img_size)
    with torch.no_grad():
        net(x)  # ours builds its window layouts eagerly, as compiling.compile_model has it
    compiling.quiet_cuda_home_probe()
    compiled = torch.compile(net)
    log = logging.getLogger("torch._inductor.compile_fx.__inductor_metrics")
    level, propagate, drop = log.level, log.propagate, logging.NullHandler()
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(drop)
    metrics.reset()
    try:  # Inductor counts when it compiles, not when a graph comes from its caches (a second run)
        with inductor_config.patch(fx_graph_cache=False, fx_graph_remote_cache=False), \
                autograd_config.patch(enable_autograd_cache=False), \
                CudaLayerNorm():  # which Dynamo traces through: the graphs hold CUDA's float32 layer_norm
            training_pass(compiled, x, y)
    finally:
        log.setLevel(level)
        log.propagate = propagate
        log.removeHandler(drop)
    if metrics.num_bytes_accessed == 0:  # say so rather than print 0
        raise RuntimeError("Inductor counted no bytes: has torch._inductor.compile_fx's metrics log moved?")
    library = sum(elements * 4 for node, elements in metrics.nodes_num_elem  # Inductor's count: bytes // 4
                  if isinstance(node, ExternKernelSchedulerNode))
    return metrics.num_bytes_accessed, library, metrics.generated_kernel_count


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="swin_tiny_patch4_window7_224", help="default: swin_tiny_patch4_window7_224")
    p.add_argument("--img-size", type=POSITIVE_INT, help="default: the variant's")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="default: 8 (figures are per image)")
    p.add_argument("--top", type=COUNT, default=15, help="operators listed, by ours and timm's bytes (default: 15)")
    p.add_argument("--attention", choices=["plain", "triton"], default="plain",
                   help="ours' attention path: plain, or kernels.py's kernels, counted as their operators' inputs and "
                        "outputs (on a CPU under TRITON_INTERPRET=1, which runs them slowly) (default: plain)")
    p.add_argument("--compiled", action="store_true",
                   help="count the step under torch.compile, as Inductor does (CPU backend)")
    args = p.parse_args()
    if args.attention == "triton" and not kernels.INTERPRET:
        p.error("--attention triton: kernels.py's kernels run on a CPU under TRITON_INTERPRET=1 only")
    return args


def main():
    args = parse_args()
    print_header()
    # F.layer_norm, counted under CUDA's rule (CudaLayerNorm): under TRITON_INTERPRET=1 the default, "auto", would run
    # kernels.py's LayerNorm in the interpreter, whose numpy arrays the counter does not see
    kernels.LAYER_NORM = "torch"
    torch.manual_seed(0)
    ours = swin.create_model(args.model, num_classes=5, **({"img_size": args.img_size} if args.img_size else {}))
    n = args.batch_size
    if args.compiled:
        print(f"# {args.model} at {ours.img_size} px, batch {n}, bf16 autocast, forward + backward, compiled "
              f"(Inductor's CPU backend), {args.attention} attention (timm's plain); per image")
        moved = {}
        for name, net in (("ours", ours), ("timm", timm_twin(ours))):
            with attention.forced(args.attention if name == "ours" else "plain"):
                moved[name], library, kernels_made = count_compiled(net.train(), n, ours.img_size)
            print(f"{name}: {kernels_made} kernels generated, {moved[name] / n / 1e6:.0f} MB moved per image, "
                  f"{library / n / 1e6:.0f} of them by library calls (matmuls, convolutions)")
        print(f"bytes moved, timm / ours: {moved['timm'] / moved['ours']:.2f}")
        return
    counts = {"ours": None, "timm": None}
    for name, net in (("ours", ours), ("timm", timm_twin(ours))):
        with attention.forced(args.attention if name == "ours" else "plain"):
            counts[name] = count_step(net.train(), args.batch_size, ours.img_size)
    print(f"# {args.model} at {ours.img_size} px, batch {n}, bf16 autocast, forward + backward, {args.attention} "
          "attention (timm's plain); per image")
    print(f"{'operator':32s} {'ours calls':>10s} {'ours MB':>9s} {'timm calls':>10s} {'timm MB':>9s}")
    both = counts["ours"].bytes + counts["timm"].bytes
    for op, _ in both.most_common(args.top):
        print(f"{op:32s} {counts['ours'].calls[op]:10d} {counts['ours'].bytes[op] / n / 1e6:9.1f} "
              f"{counts['timm'].calls[op]:10d} {counts['timm'].bytes[op] / n / 1e6:9.1f}")
    for name, count in counts.items():
        print(f"{name}: {sum(count.calls.values())} operator calls a step, "
              f"{sum(count.bytes.values()) / n / 1e6:.0f} MB moved and "
              f"{sum(count.flops.values()) / n / 1e9:.1f} GFLOP of matmuls per image")
    ratio = sum(counts["timm"].bytes.values()) / sum(counts["ours"].bytes.values())
    print(f"bytes moved, timm / ours: {ratio:.2f}")


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
