"""What the benchmarks share: the header that names the command and the machine (a figure is quoted
with both, and CPU figures depend on the processor), and timing pipelines in alternating rounds."""
import os
import platform
import statistics
import sys
from pathlib import Path

import torch


def machine(device=None) -> str:
    """The processor, the cores this process may use, the GPU when `device` is CUDA, and the versions."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    cpu = models[0] if models else platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f"{torch.cuda.get_device_name(device)}; " if torch.device(device or "cpu").type == "cuda" else ""
    import PIL
    import torchvision
    from PIL import features
    return (f"{gpu}{cpu}, {cores} cores usable, {torch.get_num_threads()} torch threads; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, torchvision "
            f"{torchvision.__version__}, Pillow {PIL.__version__} (libjpeg-turbo "
            f"{features.version('libjpeg_turbo') or 'no'})")


def gpu_or_small(args, cpu_batch_size: int) -> bool:
    """--device resolved and, where not given, --model and --batch-size: swin_tiny at batch 128 on a GPU, the
    micro variant at `cpu_batch_size` on a CPU (there the figures only check that the benchmark runs). Whether
    it is a GPU."""
    from utils import select_device
    args.device = select_device(args.device)
    gpu = args.device.type == "cuda"
    args.model = args.model or ("swin_tiny_patch4_window7_224" if gpu else "swin_micro_patch4_window4_128")
    args.batch_size = args.batch_size or (128 if gpu else cpu_batch_size)
    return gpu


def print_header(device=None) -> None:
    print(f"$ python {' '.join(sys.argv)}")
    print(f"# {machine(device)}", flush=True)


def alternating_rounds(runs: dict, rounds: int, digits: int = 0) -> dict:
    """Median images/s of each run (a callable returning images/s), after one warm-up call each, timed
    round after round in alternating order so that all see the same machine load."""
    for run in runs.values():
        run()
    rates = {name: [] for name in runs}
    for round_ in range(rounds):
        for name in list(runs) if round_ % 2 == 0 else list(runs)[::-1]:
            rates[name].append(runs[name]())
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {rates[name][-1]:.{digits}f}/s" for name in runs))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, median in medians.items():
        print(f"median {name}: {median:.{digits}f} images/s")
    return medians
