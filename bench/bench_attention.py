"""Which window-attention kernel is fastest, per case: the plain path, F.scaled_dot_product_attention
(bias and mask expanded to every window), FlexAttention and kernels.py's Triton kernel, eager and compiled,
training and inference.

    python bench/bench_attention.py --device cuda                     # swin_tiny's four stages, batch 128, bf16
    python bench/bench_attention.py --device cuda --no-compile        # eager only (no compile time)
    python bench/bench_attention.py                                   # a CPU: plain and sdpa, micro sizes

Two levels, both under autocast, the whole model first (what attention.CHOSEN_ATTENTION is chosen by):
- the whole model with attention.ATTENTION set to each kind, eager: images/s of a training step
  (forward, backward) and of inference, the kinds in turn over 3 rounds;
- the attention alone (attention.window_attention) at the shapes of each stage, regular and shifted
  windows: forward (inference) and forward + backward (training), in milliseconds, eager and, with
  torch.compile of the function, compiled (FlexAttention always runs compiled).
Times are medians of --repeats runs after warm-up, synchronised.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import gpu_or_small, print_header  # noqa: E402  (bench/ is on the path)
from config import POSITIVE_INT  # noqa: E402
import attention  # noqa: E402
import compiling  # noqa: E402
import model as swin  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="default: swin_tiny_patch4_window7_224 on a GPU, swin_micro_patch4_window4_128 "
                                   "on a CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="default: 128 on a GPU, 8 on a CPU")
    p.add_argument("--repeats", type=POSITIVE_INT, default=20, help="default: 20")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the compiled attention (default: on)")
    p.add_argument("--kinds", nargs="+", choices=attention.ATTENTION_KINDS,
                   help="default: all four on a GPU; plain and sdpa on a CPU (FlexAttention has no CPU backward, "
                        "kernels.py's runs on CUDA)")
    args = p.parse_args()
    gpu = gpu_or_small(args, cpu_batch_size=8)
    args.kinds = args.kinds or (list(attention.ATTENTION_KINDS) if gpu else ["plain", "sdpa"])
    return args


def median_ms(fn, device, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def stage_inputs(net, batch: int, device, dtype):
    """Per stage and window kind: (name, q, k, v, bias, mask, blocks of that kind) at the model's sizes."""
    size = net.img_size // net.patch_embed.patch_size
    cases = []
    for i, stage in enumerate(net.layers):
        layout = stage.layout(size, size, device)
        heads = stage.blocks[0].attn.num_heads
        dim = net.patch_embed.proj.out_channels * 2 ** i
        n, windows = layout.area, layout.num_windows
        for shifted in (False, True):
            count = sum(1 for b in range(len(stage.blocks)) if b % 2 == shifted)
            if count == 0:
                continue
            q, k, v = (torch.randn(batch * windows, heads, n, dim // heads, device=device, dtype=dtype,
                                   requires_grad=True) for _ in range(3))
            bias = torch.randn(heads, n, n, device=device, requires_grad=True)
            cases.append((f"stage {i + 1} {'shifted' if shifted else 'regular'} ({windows}x{heads}x{n}x{n})",
                          q, k, v, bias, layout.masks[shifted], count))
        size = (size + 1) // 2
    return cases


def time_kernels(args, net, dtype):
    autocast = torch.autocast(args.device.type, dtype=dtype, enabled=dtype is not None)
    modes = ["eager"] + (["compiled"] if args.compile else [])
    # each row's attend() shares one code object, so one dynamo cache: an entry per stage, shift, kind and grad
    # mode, past the default limit of 8, after which the rows labelled compiled would run eagerly
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    totals = {}  # (mode, case, kind) -> ms over all blocks of the model
    compiling.quiet_cuda_home_probe()
    columns = [f"{mode} {case}" for mode in modes for case in ("inference", "training")]
    print(f"{'attention alone, ms':46s}" + "".join(f"{column:>20s}" for column in columns))
    for name, q, k, v, bias, mask, count in stage_inputs(net, args.batch_size, args.device, dtype):
        for kind in args.kinds:
            row = []
            for mode in modes:
                def attend(q, k, v, bias, kind=kind):
                    return attention.window_attention(q, k, v, bias, mask, 0.0, kind)
                fn = torch.compile(attend, dynamic=False) if mode == "compiled" else attend

                def inference():
                    with torch.no_grad(), autocast:
                        fn(q.detach(), k.detach(), v.detach(), bias.detach())

                def training():
                    with autocast:
                        out = fn(q, k, v, bias)
                    out.float().sum().backward()

                for case, run in (("inference", inference), ("training", training)):
                    try:
                        ms = median_ms(run, args.device, args.repeats)
                    except Exception as error:  # a kernel this build lacks: say so, go on
                        print(f"  {kind} {mode} {case}: {type(error).__name__}: {str(error)[:200]}")
                        ms = float("nan")
                    row.append(ms)
                    key = (mode, case, kind)
                    totals[key] = totals.get(key, 0.0) + ms * count
            print(f"{name + ' ' + kind:46s}" + "".join(f"{ms:20.3f}" for ms in row), flush=True)
    print("whole model (each stage's time x its blocks), ms:")
    for mode in modes:
        for case in ("inference", "training"):
            times = {kind: totals[(mode, case, kind)] for kind in args.kinds}
            best = min((t, kind) for kind, t in times.items() if t == t)[1]
            print(f"  {mode:8s} {case:9s} " + "  ".join(f"{kind} {t:8.2f}" for kind, t in times.items())
                  + f"   fastest: {best}", flush=True)


def time_model(args, net, dtype):
    x = torch.randn(args.batch_size, 3, net.img_size, net.img_size, device=args.device)
    autocast = torch.autocast(args.device.type, dtype=dtype, enabled=dtype is not None)

    def training():
        net.train()
        with autocast:
            out = net(x)
        out.float().logsumexp(-1).mean().backward()

    def inference():  # as predict.py runs it: in eval mode
        net.eval()
        with torch.no_grad(), autocast:
            net(x)

    # kinds in turn, round after round (reversed every other round), so that all see the same machine: one
    # kind's rounds spread by 10% or more on a shared GPU machine, more than some differences between kinds
    rounds, speeds, failed = 3, {kind: ([], []) for kind in args.kinds}, set()
    for round_ in range(rounds):
        for kind in args.kinds if round_ % 2 == 0 else args.kinds[::-1]:
            if kind in failed:
                continue
            try:
                with attention.forced(kind):
                    for column, fn in zip(speeds[kind], (training, inference)):
                        column.append(args.batch_size / median_ms(fn, args.device, max(3, args.repeats // 4)) * 1e3)
            except Exception as error:
                print(f"  {kind}: {type(error).__name__}: {str(error)[:200]}")
                failed.add(kind)
    print(f"whole model, eager, img/s, medians of {rounds} rounds:")
    print(f"{'':27s}{'kind':6s} {'training':>10s} {'inference':>10s}")
    for kind in args.kinds:
        if kind not in failed:
            print(f"{'':27s}{kind:6s} {statistics.median(speeds[kind][0]):10.0f} "
                  f"{statistics.median(speeds[kind][1]):10.0f}", flush=True)


def main():
    args = parse_args()
    dtype = torch.bfloat16 if args.device.type == "cuda" else None
    net = swin.create_model(args.model, drop_path_rate=0.0).to(args.device)
    print_header(args.device)
    print(f"# {args.model}, batch {args.batch_size}, "
          f"{'bf16 autocast' if dtype else 'fp32'}; chosen now: {attention.CHOSEN_ATTENTION}", flush=True)
    time_model(args, net, dtype)
    time_kernels(args, net, dtype)


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
