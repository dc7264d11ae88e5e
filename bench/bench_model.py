"""Speed and memory of model.py against timm's Swin, same variant, same weights, in one run.

    python bench/bench_model.py                      # CPU, fp32, batch 8: train step and inference
    python bench/bench_model.py --device cuda --dtype bf16 --batch-size 128
    python bench/bench_model.py --dtype fp32 bf16    # both, interleaved: what bf16 gains on this CPU
    python bench/bench_model.py --flush-denormal     # denormals as 0: what they cost timm
    python bench/bench_model.py --dtype bf16 --held-casts on off   # inference's weight casts held, or made each pass
    python bench/bench_model.py --memory             # peak memory of a training step, with and
                                                     # without activation checkpointing (batch 32)

Train step = forward + backward (no optimizer step). The two models run alternately, round
after round, so both see the same machine load; the figure quoted is the median of the
per-round ratios (timm time / our time: above 1 means ours is faster).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_header  # noqa: E402  (bench/ is on the path)
from config import POSITIVE_INT  # noqa: E402
import model  # noqa: E402
import precision  # noqa: E402
from utils import counted, select_device, tune_for  # noqa: E402
from weights import load_weights  # noqa: E402

TIMM_NAMES = {
    "swin_tiny_patch4_window7_224": "swin_tiny_patch4_window7_224",
    "swinv2_tiny_patch4_window8_256": "swinv2_tiny_window8_256",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(TIMM_NAMES), choices=list(TIMM_NAMES),
                        help="the variants that timm has too (default: both)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="bf16 = autocast; both: each model in each, side by side, and ours' bf16 against fp32 "
                             "(default: fp32)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="default: 8")
    parser.add_argument("--rounds", type=POSITIVE_INT, default=7, help="timed rounds per model and mode (default: 7)")
    parser.add_argument("--memory", action="store_true", help="measure peak memory with/without checkpointing")
    parser.add_argument("--memory-batch-size", type=POSITIVE_INT, default=32, help="default: 32")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="treat denormal floats as 0 in the whole run: how much the official -100 mask "
                             "costs timm on an x86 CPU (our -1e4 mask makes none)")
    parser.add_argument("--held-casts", nargs="+", default=["on"], choices=["on", "off"],
                        help="under bf16, ours' inference holds its weights' casts while they do not change "
                             "(precision.HOLD_INFERENCE_CASTS), or casts them at every pass; both: an inference row "
                             "each, side by side (default: on)")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "CKPT"), help=argparse.SUPPRESS)
    return parser.parse_args()


def build_pair(name: str, device: str):
    """timm's model and ours with the very same weights (loaded through weights.load_weights)."""
    import timm
    torch.manual_seed(0)
    reference = timm.create_model(TIMM_NAMES[name], drop_path_rate=0.2)
    ours = model.create_model(name, drop_path_rate=0.2)
    load_weights(ours, reference.state_dict(), verbose=False)
    return reference.to(device), ours.to(device)


def step_function(net, x, train: bool, autocast, held_casts: bool = True):
    def train_step():
        net.zero_grad(set_to_none=True)
        with autocast():
            loss = net(x).float().logsumexp(-1).mean()
        loss.backward()

    def inference():
        precision.HOLD_INFERENCE_CASTS = held_casts
        try:
            with torch.inference_mode(), autocast():
                net(x)
        finally:
            precision.HOLD_INFERENCE_CASTS = True

    return train_step if train else inference


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare_speed(args):
    autocasts = {dtype: (lambda: torch.autocast(args.device, dtype=torch.bfloat16)) if dtype == "bf16" else nullcontext
                 for dtype in args.dtype}
    for name in args.models:
        reference, ours = build_pair(name, args.device)
        x = torch.randn(args.batch_size, 3, ours.img_size, ours.img_size, device=args.device)
        for train in (True, False):
            reference.train(train)
            ours.train(train)
            fns = {(key, dtype): step_function(net, x, train, autocast, held == "on")
                   for dtype, autocast in autocasts.items()
                   for key, net, held in (("timm", reference, "on"), ("ours", ours, args.held_casts[0]))}
            if not train and len(args.held_casts) > 1 and "bf16" in args.dtype:  # the other way, bf16 only
                fns["ours, held casts off", "bf16"] = step_function(ours, x, False, autocasts["bf16"], False)
            for fn in fns.values():  # warm up: allocator, layouts, kernels
                fn()
                fn()
            times = {key: [] for key in fns}
            for r in range(args.rounds):
                for key in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                    times[key].append(timed(fns[key], args.device))
            mode = "train step" if train else "inference "
            for dtype in args.dtype:
                timm_times, our_times = times["timm", dtype], times["ours", dtype]
                ratio = statistics.median(t / o for t, o in zip(timm_times, our_times))
                speed = {k: args.batch_size / statistics.median(v) for k, v in (("timm", timm_times),
                                                                                  ("ours", our_times))}
                label = f" {dtype}" if len(args.dtype) > 1 else ""
                print(f"{name:32s} {mode}{label}  timm {speed['timm']:8.1f} img/s   ours {speed['ours']:8.1f} img/s   "
                      f"ratio {ratio:.2f}", flush=True)
            if len(args.dtype) > 1:
                gain = statistics.median(f / b for f, b in zip(times["ours", "fp32"], times["ours", "bf16"]))
                print(f"{name:32s} {mode}  ours bf16 against fp32: {gain:.2f}x", flush=True)
            if ("ours, held casts off", "bf16") in times:
                each = times["ours, held casts off", "bf16"]
                gain = statistics.median(e / h for e, h in zip(each, times["ours", "bf16"]))
                ratio = statistics.median(t / e for t, e in zip(times["timm", "bf16"], each))
                print(f"{name:32s} {mode}  bf16, casts made at every pass: ratio {ratio:.2f} to timm; held casts "
                      f"{gain:.2f}x them", flush=True)


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def current_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def memory_child(name: str, checkpointing: bool, batch_size: int, device: str, dtype: str = "fp32") -> None:
    """One training step in a fresh process; prints the peak memory it added (bytes)."""
    net = model.create_model(name, grad_checkpointing=checkpointing).to(device).train()
    x = torch.randn(batch_size, 3, net.img_size, net.img_size, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
        base = current_rss_bytes()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        loss = net(x).float().logsumexp(-1).mean()
    loss.backward()
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else peak_rss_bytes()
    print(peak - base)


def compare_memory(args):
    for name in args.models:
        peaks = {}
        for checkpointing in (False, True):
            out = subprocess.run(
                [sys.executable, __file__, "--device", args.device, "--dtype", args.dtype[0],
                 "--memory-batch-size", str(args.memory_batch_size),
                 "--memory-child", name, str(int(checkpointing))],
                check=True, capture_output=True, text=True,
                # a fixed mmap threshold makes glibc return every large freed block at once, so
                # the peak RSS follows the live tensors rather than the allocator's hoarding
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}).stdout
            peaks[checkpointing] = int(out.split()[-1])
        saving = 1 - peaks[True] / peaks[False]
        change = f"{saving:.0%} less" if saving >= 0 else f"{-saving:.0%} more: too small a batch for it to pay"
        print(f"{name:32s} training step, batch {args.memory_batch_size}: peak "
              f"{peaks[False] / 2**30:.2f} GiB, with activation checkpointing {peaks[True] / 2**30:.2f} GiB "
              f"({change})", flush=True)


def main():
    args = parse_args()
    select_device(args.device)  # checked: --device cuda without a GPU is one line, not CUDA's traceback (kept as typed:
    # the timing compares it with "cuda")
    torch.set_flush_denormal(args.flush_denormal)
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1] == "1", args.memory_batch_size, args.device,
                     args.dtype[0])
        return
    print_header(args.device)
    print(f"# {' and '.join(args.dtype)}; " + (f"batch {args.memory_batch_size}, peak memory" if args.memory else
                                  f"batch {args.batch_size}; {counted(args.rounds, 'round')}") + f"; pid {os.getpid()}")
    if args.memory:
        compare_memory(args)
    else:
        tune_for(torch.device(args.device))  # as train.py and predict.py set the device up
        compare_speed(args)


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
