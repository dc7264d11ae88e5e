"""Training speed: train.py's step against timm's model in that same step, and train.py's whole loop
with its loader, interleaved in one run; then, with --memory, peak memory, activation checkpointing
and the largest batch that fits.

    python bench/bench_train.py                      # a CPU: the micro variant, batch 16 (a check that it runs)
    python bench/bench_train.py --device cuda        # swin_tiny, 224 px, batch 128, bf16, eager
    python bench/bench_train.py --device cuda --compile
    python bench/bench_train.py --device cuda --cuda-graphs   # both models' passes replayed as CUDA graphs
    python bench/bench_train.py --device cuda --cast-once on off   # ours' weights cast once a stage, or by autocast
    python bench/bench_train.py --device cuda --data-path flower_photos imagenet/train
    python bench/bench_train.py --device cuda --compile --workers 15 11 --worker-nice 10 0   # e2e rows each
    python bench/bench_train.py --device cuda --memory --model swin_base_patch4_window7_224
    python bench/bench_train.py --device cuda --profile     # the operators that take the time, bare and timm

Three ways of training, each round in turn, so that all see the same machine:
- bare: train.py's training step (engine.train_step: normalise the uint8 batch, autocast, loss with
  label smoothing, backward, gradient clipping, AdamW, schedule; EMA with --ema) on batches already
  on the device;
- timm: the same step, the same weights, with timm's model of the same variant;
- e2e: train.py's loop (engine.train_one_epoch) and loader (loaders.build_train_loader, default
  workers) over folders of JPEGs, in epochs of --e2e-batches batches. Each round starts the loader
  afresh, lets its workers find their stride for twice their number of batches, untimed, then times
  --e2e-batches, across an epoch's end as train.py's loader runs (one iterator for all epochs): the
  rate a long run keeps, neither the cold start nor batches made ahead while the other ways ran.
  Without --data-path the folders are made from the bundled photos at flower_photos' size (320x240)
  and ImageNet's (500x375), JPEG quality 90.
The figures are medians over rounds of images per second, the ratios medians of per-round ratios;
"waiting" is the share of an e2e epoch spent waiting for the loader.
"""
import argparse
import copy
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import gpu_or_small, print_header  # noqa: E402  (bench/ is on the path)
from config import COUNT, POSITIVE_INT  # noqa: E402
import compiling  # noqa: E402
import engine  # noqa: E402
import attention  # noqa: E402
import kernels  # noqa: E402
import loaders  # noqa: E402
import model as swin  # noqa: E402
import train  # noqa: E402
from images import BUNDLED_SAMPLE  # noqa: E402
from splits import load_splits  # noqa: E402
import precision  # noqa: E402
from precision import amp_dtype, amp_name  # noqa: E402
from utils import counted, tune_for  # noqa: E402
from weights import load_weights  # noqa: E402
import workers  # noqa: E402
from workers import default_workers  # noqa: E402

PHOTO_SIZES = ((320, 240), (500, 375))  # flower_photos' typical size, ImageNet's


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="default: swin_tiny_patch4_window7_224 on a GPU, swin_micro_patch4_window4_128 "
                                   "on a CPU")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="default: 128 on a GPU, 16 on a CPU")
    p.add_argument("--img-size", type=POSITIVE_INT, help="default: the variant's")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="as train.py's")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (default: eager)")
    p.add_argument("--cuda-graphs", action="store_true", help="as train.py's, for both models: eager, each model's "
                   "forward and backward replayed as CUDA graphs; with --compile, torch.compile's reduce-overhead mode")
    p.add_argument("--attention", nargs="+", choices=attention.ATTENTION_KINDS,
                   help="force ours to a kind; several: a bare row each, side by side (default: its choice per case)")
    p.add_argument("--layer-norm", nargs="+", choices=kernels.LAYER_NORM_KINDS,
                   help="ours' LayerNorm in training (kernels.py); several: a bare row each, with each --attention "
                        f"(default: {kernels.LAYER_NORM})")
    p.add_argument("--cast-once", nargs="+", choices=["on", "off"],
                   help="ours' stages cast their weights under autocast in one kernel (precision.CAST_ONCE), or "
                        "leave each to autocast; both: a bare row each, with each --attention and --layer-norm "
                        "(default: on)")
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights, as train.py --ema")
    p.add_argument("--data-path", type=Path, nargs="*", help="folders of class folders of JPEGs for e2e (default: "
                   "made from the bundled photos at 320x240 and 500x375)")
    p.add_argument("--workers", type=COUNT, nargs="+",
                   help="loader workers; several: an e2e row per count, at the first photo size (default: train.py's)")
    p.add_argument("--worker-nice", type=int, nargs="+",
                   help="the workers' nice value (workers.NICE); several: an e2e row per value, at the first photo "
                        f"size (default: {workers.NICE})")
    p.add_argument("--decode", nargs="+", choices=["workers", "device"],
                   help="e2e with train.py's --decode: JPEGs decoded by the loader's workers, or batched on the device "
                        "(default: both on a GPU, workers on a CPU)")
    p.add_argument("--rounds", type=POSITIVE_INT, default=5, help="default: 5")
    p.add_argument("--steps", type=POSITIVE_INT, default=10, help="steps per round of bare and timm (default: 10)")
    p.add_argument("--e2e-batches", type=POSITIVE_INT, default=40, help="batches per e2e epoch (default: 40)")
    p.add_argument("--no-timm", action="store_true", help="skip timm (a variant timm lacks, or to save time)")
    p.add_argument("--no-e2e", action="store_true", help="skip the loader")
    p.add_argument("--memory", action="store_true", help="instead: peak memory and speed with and without "
                   "--grad-checkpointing, and the largest batch that fits (a GPU)")
    p.add_argument("--profile", type=int, nargs="?", const=20, default=0, metavar="N",
                   help="instead: the N operators (default 20) that take the most time in --steps steps of bare and "
                        "of timm (torch.profiler)")
    args = p.parse_args()
    gpu = gpu_or_small(args, cpu_batch_size=16)
    args.decode = args.decode or (["workers", "device"] if gpu else ["workers"])
    for flag, kinds in (("--layer-norm", args.layer_norm), ("--attention", args.attention)):
        if "triton" in (kinds or []) and not (gpu or kernels.INTERPRET):
            p.error(f"{flag} triton: kernels.py's kernels run on CUDA (on a CPU under TRITON_INTERPRET=1 only)")
    if args.cuda_graphs and not gpu:
        p.error("--cuda-graphs needs a GPU")
    if args.memory and args.batch_size <= 8:  # the largest batch is extrapolated from batch 8's peak to this one's
        p.error(f"--memory needs a --batch-size above 8 (given {args.batch_size}): the largest batch that fits is "
                "extrapolated from the peaks at 8 and at it")
    return args


# --- The models and their training states ---

def train_config(args):
    """train.py's own settings for this run: its parser's defaults and the flags of this benchmark
    (build_state's schedule has 1000 steps an epoch: the lr stays in its warm-up, whatever it is)."""
    flags = ["--model", args.model, "--batch-size", str(args.batch_size), "--amp", args.amp]
    cfg = train.build_parser().parse_args(flags + ["--ema"] * args.ema + ["--cuda-graphs"] * args.cuda_graphs)
    cfg.workers = args.workers[0] if args.workers else default_workers(args.device)
    return cfg


def timm_twin(ours):
    """timm's model of our variant's architecture, and ours given its weights."""
    from timm.models import swin_transformer, swin_transformer_v2
    cfg = swin.VARIANTS[ours.variant]
    common = dict(img_size=ours.img_size, num_classes=ours.num_classes, embed_dim=cfg["embed_dim"],
                  depths=cfg["depths"], num_heads=cfg["num_heads"], window_size=cfg["window_size"],
                  drop_path_rate=ours.overrides.get("drop_path_rate", cfg["drop_path_rate"]))
    if cfg["version"] == 2:
        reference = swin_transformer_v2.SwinTransformerV2(
            pretrained_window_sizes=cfg["pretrained_window_sizes"], **common)
    else:
        reference = swin_transformer.SwinTransformer(**common)
    load_weights(ours, reference.state_dict(), verbose=False)
    return reference


def build_state(args, cfg, module, device, amp, img_size: int):
    """A TrainState as train.py builds it (5 classes), compiled or graphed as train.py does it."""
    module.to(device)
    net = module
    if args.compile:
        net = compiling.compile_model(module, module, img_size, device, cuda_graphs=args.cuda_graphs)
    elif args.cuda_graphs:
        net = compiling.CudaGraphed(module)
    return engine.build_train_state(cfg, module, net, device, amp, 1000, [1] * 5)


def graphed_as_asked(state) -> bool:
    """False for a state built with --cuda-graphs, eager (compiling.CudaGraphed), whose capture failed or has not
    happened: it trains eagerly, said by a notice only."""
    net = state.net
    return not isinstance(net, compiling.CudaGraphed) or (net.graphed is not None and not net.failed)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_round(state, cfg, batch, steps: int) -> float:
    """Images per second over `steps` training steps on one batch already on the device."""
    images, labels = batch
    synchronize(state.device)
    start = time.perf_counter()
    for _ in range(steps):
        engine.train_step(state, images, labels, cfg)
    synchronize(state.device)
    return steps * len(labels) / (time.perf_counter() - start)


def e2e_round(state, cfg, loader, epoch_batches, epoch: int) -> tuple:
    """(images per second, share spent waiting for data) over len(loader) batches of train.py's loop,
    once the freshly started loader is in its stride."""
    epoch_batches.start(epoch)
    batches = iter(loader)
    # untimed: the first batches, made by all workers at once; the timed ones then cross the epoch's end
    engine.train_one_epoch(state, loaders.Take(batches, 2 * max(loader.num_workers, 1)), cfg, show_progress=False)
    state.batches_done = 0
    synchronize(state.device)
    result = engine.train_one_epoch(state, loaders.Take(batches, len(loader)), cfg, show_progress=False)
    synchronize(state.device)
    seconds = result["seconds"]
    return result["images"] / seconds, result["data_seconds"] / seconds


# --- Data ---

def photo_folders(scratch: Path, sizes) -> list:
    """The bundled photos resized to each size (JPEG quality 90), as class folders."""
    folders = []
    for width, height in sizes:
        folder = scratch / f"{width}x{height}"
        for path in sorted(BUNDLED_SAMPLE.glob("*/*.jpg")):
            (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
            with Image.open(path) as image:
                image.convert("RGB").resize((width, height), Image.BICUBIC).save(
                    folder / path.parent.name / path.name, quality=90)
        folders.append(folder)
    return folders


def e2e_samples(folder: Path, count: int) -> list:
    """`count` (path, label) training samples of a folder as train.py reads it, repeated as needed."""
    files = load_splits(folder, val_ratio=0.0, check=False).train
    return (files * (count // len(files) + 1))[:count]


def describe(folder: Path) -> str:
    """A folder made here is named after its size; another is named, with the size of its first photo."""
    with Image.open(next(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))) as image:
        size = f"{image.width}x{image.height}"
    return size if folder.name == size else f"{folder.name} ({size}...)"


# --- Speed ---

def bare_variants(args) -> dict:
    """The bare states' names and the (attention kind, LayerNorm kind, weights cast once) each uses: "bare" alone,
    unless several are named: then "bare plain", "bare sdpa", "bare plain, triton LN"..., every combination."""
    attentions = args.attention or [None]
    norms = args.layer_norm or [kernels.LAYER_NORM]
    casts = args.cast_once or ["on" if precision.CAST_ONCE else "off"]
    if len(attentions) == len(norms) == len(casts) == 1:
        return {"bare": (attentions[0], norms[0], casts[0] == "on")}
    return {"bare " + ", ".join([a] * (len(attentions) > 1) + [f"{n} LN"] * (len(norms) > 1)
                                + [f"cast once {c}"] * (len(casts) > 1)): (a, n, c == "on")
            for a in attentions for n in norms for c in casts}


def use(variant) -> None:
    """Ours with this (attention kind, LayerNorm kind, cast once) from now on; None (timm's) leaves them as they are."""
    if variant is not None:
        attention.ATTENTION, kernels.LAYER_NORM, precision.CAST_ONCE = variant


def step_states(args, cfg, device, amp) -> tuple:
    """({"timm": ..., "bare": ...} training states with the same weights, {bare state: its (attention,
    LayerNorm, cast once) settings}, a batch on the device, img_size). With several kinds named, a bare state each
    (bare_variants)."""
    torch.manual_seed(0)
    ours = swin.create_model(args.model, num_classes=5, **({"img_size": args.img_size} if args.img_size else {}))
    img_size = ours.img_size
    states = {}
    if not args.no_timm:
        reference = timm_twin(ours)
        states["timm"] = build_state(args, cfg, reference, device, amp, img_size)
    variants = bare_variants(args)
    for name in variants:
        states[name] = build_state(args, cfg, copy.deepcopy(ours), device, amp, img_size)
    batch = (torch.randint(0, 256, (args.batch_size, 3, img_size, img_size), dtype=torch.uint8, device=device),
             torch.randint(0, 5, (args.batch_size,), device=device))
    return states, variants, batch, img_size


def e2e_loaders_of(args, cfg, img_size: int, folders: list) -> dict:
    """name -> (loader, its EpochBatches), train.py's, for each e2e row: each folder with each --decode, at the first
    --workers count and --worker-nice value; the first folder also with each further count and value."""
    made = {}
    nice = args.worker_nice[0] if args.worker_nice else workers.NICE
    for i, folder in enumerate(folders):
        samples = e2e_samples(folder, args.e2e_batches * args.batch_size)
        rows = [(decode, cfg.workers, nice) for decode in args.decode]
        if i == 0:  # does a busy CPU slow the process that launches the GPU's work?
            rows += [("workers", n, nice) for n in (args.workers or [])[1:]]
            rows += [("workers", cfg.workers, n) for n in (args.worker_nice or [])[1:]]
        for decode, count, row_nice in rows:
            name = f"e2e {describe(folder)}" + (", decoded on the device" if decode == "device" else "") \
                + (f", {counted(count, 'worker')}" if args.workers and len(args.workers) > 1 else "") \
                + (f", nice {row_nice}" if args.worker_nice and len(args.worker_nice) > 1 else "")
            settings = argparse.Namespace(**{**vars(cfg), "decode": decode, "workers": count})
            saved, workers.NICE = workers.NICE, row_nice  # read as the loader is made
            try:
                made[name] = loaders.build_train_loader(settings, samples, img_size)
            finally:
                workers.NICE = saved
    return made


def compare_speed(args, device, amp):
    cfg = train_config(args)
    states, variants, batch, img_size = step_states(args, cfg, device, amp)

    def step(name, steps):
        use(variants.get(name))
        return step_round(states[name], cfg, batch, steps)
    scratch = tempfile.TemporaryDirectory()
    e2e_loaders = {} if args.no_e2e else \
        e2e_loaders_of(args, cfg, img_size, args.data_path or photo_folders(Path(scratch.name), PHOTO_SIZES))
    print(f"# {args.model} at {img_size} px, batch {args.batch_size}, amp {amp_name(amp)}, "
          f"{'compiled' if args.compile else 'eager'}{' with CUDA graphs' if args.cuda_graphs else ''}, "
          f"attention {' / '.join(args.attention or ['chosen per case'])}, "
          f"LayerNorm {' / '.join(args.layer_norm or [kernels.LAYER_NORM])}, "
          f"weights cast once {' / '.join(args.cast_once or ['on' if precision.CAST_ONCE else 'off'])}"
          + ("" if args.no_e2e else f", {' / '.join(map(str, counts := args.workers or [cfg.workers]))} loader "
                                    f"worker{'' if counts == [1] else 's'} at nice "
                                    f"{' / '.join(map(str, args.worker_nice or [workers.NICE]))}")
          + (", EMA" if args.ema else ""), flush=True)

    warm_up = {}  # seconds: compiling, when compiled; the allocator's and cuDNN/cuBLAS's first choices
    for name in list(states):
        start = time.perf_counter()
        try:
            step(name, 3)
        except Exception as error:  # a kernel or compile that fails here: the other rows still come (GPU time is short)
            print(f"{name}: left out, it failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
            del states[name]
            variants.pop(name, None)
            continue
        warm_up[name] = time.perf_counter() - start
        if not graphed_as_asked(states[name]):  # its rows would be eager figures under a CUDA graphs heading
            print(f"{name}: left out, its CUDA graphs were not captured (it ran eagerly: the notice above)",
                  flush=True)
            del states[name]
            variants.pop(name, None)
    if not variants:
        raise SystemExit("every bare variant failed: nothing to compare")
    bare = next(iter(variants))  # the loop's model, and the step the loop is compared with
    use(variants[bare])
    if e2e_loaders:
        start = time.perf_counter()
        for epoch, (loader, epoch_batches) in enumerate(e2e_loaders.values()):  # and start the loaders' workers
            e2e_round(states[bare], cfg, loader, epoch_batches, epoch)
        warm_up["loaders"] = time.perf_counter() - start
    print(f"warm-up{' (compiling)' if args.compile else ''}: "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in warm_up.items()), flush=True)
    if args.compile and args.cuda_graphs:  # Inductor says a graph it runs without CUDA graphs in its log alone
        from torch._dynamo.utils import counters
        if skips := counters["inductor"]["cudagraph_skips"]:
            print(f"# Inductor ran {counted(skips, 'graph')} without CUDA graphs (TORCH_LOGS=cudagraphs says why): "
                  "rows said to be with CUDA graphs are in part without", flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    speeds = {name: [] for name in list(states) + list(e2e_loaders)}
    waits = {name: [] for name in e2e_loaders}
    peaks = {}
    for round_ in range(args.rounds):
        order = list(states) if round_ % 2 == 0 else list(states)[::-1]
        for name in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            speeds[name].append(step(name, args.steps))
            if device.type == "cuda" and not args.cuda_graphs:
                peaks[name] = torch.cuda.max_memory_allocated() / 2**30
        use(variants[bare])
        for name, (loader, epoch_batches) in e2e_loaders.items():
            speed, wait = e2e_round(states[bare], cfg, loader, epoch_batches, round_ + 10)
            speeds[name].append(speed)
            waits[name].append(wait)
        print(f"round {round_ + 1}: " + ", ".join(
            f"{name} {values[-1]:.0f}" + (f" ({waits[name][-1]:.0%} waiting)" if name in waits else "")
            for name, values in speeds.items()) + " img/s", flush=True)

    if device.type == "cuda" and args.cuda_graphs:  # the H200's 2.26 GiB against 8.72 eager, 2026-11-30
        print("# process peak: not shown with --cuda-graphs: a replay reuses the memory its capture took, which "
              "the allocator's peak leaves out")
    if peaks:  # all the rows' states stay on the GPU, built before the rounds: not one step's own peak
        print("# process peak: with every row's weights, gradients and optimizer state resident; --memory measures "
              "one step alone")
    width = max(44, *map(len, speeds))
    for name, values in speeds.items():
        peak = f"  process peak {peaks[name]:.2f} GiB" if name in peaks else ""
        wait = f"  waiting for data {statistics.median(waits[name]):.0%}" if name in waits else ""
        print(f"{name:{width}s} {statistics.median(values):9.1f} img/s{peak}{wait}")
    for name in variants if "timm" in speeds else ():
        print(f"{name} / timm {ratio(speeds[name], speeds['timm']):.2f}")
    for name in e2e_loaders:
        print(f"{name} / {bare} {ratio(speeds[name], speeds[bare]):.2f}")
    scratch.cleanup()


def ratio(a: list, b: list) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


# --- Memory ---

def peak_and_speed(args, cfg, device, amp, batch_size: int, checkpointing: bool, timed: bool = True) -> tuple:
    """(peak GiB, img/s) of train.py's step at this batch size, or None when it does not fit. Not `timed` (the
    largest batch's probes, whose speed nobody reads): (peak GiB, None), without --steps more steps."""
    torch.manual_seed(0)
    net = swin.create_model(args.model, num_classes=5, grad_checkpointing=checkpointing,
                            **({"img_size": args.img_size} if args.img_size else {}))
    state = build_state(args, cfg, net, device, amp, net.img_size)
    size = net.img_size
    batch = (torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=device),
             torch.randint(0, 5, (batch_size,), device=device))
    try:
        torch.cuda.reset_peak_memory_stats()
        step_round(state, cfg, batch, 2)
        peak = torch.cuda.max_memory_allocated() / 2**30
        return peak, step_round(state, cfg, batch, args.steps) if timed else None
    except torch.OutOfMemoryError:
        return None
    finally:
        del state, net, batch
        gc.collect()
        torch.cuda.empty_cache()


def compare_memory(args, device, amp):
    if device.type != "cuda":
        raise SystemExit("--memory measures GPU memory: run it with --device cuda")
    cfg = train_config(args)
    print(f"# {args.model}, amp {amp_name(amp)}, {'compiled' if args.compile else 'eager'}; train.py's step "
          "(AdamW states included)", flush=True)
    results = {}
    for checkpointing in (False, True):
        results[checkpointing] = peak_and_speed(args, cfg, device, amp, args.batch_size, checkpointing)
        if results[checkpointing] is None:  # without checkpointing: with it is the figure wanted then
            print(f"batch {args.batch_size}, grad checkpointing {'on ' if checkpointing else 'off'}: does not fit")
            continue
        peak, speed = results[checkpointing]
        print(f"batch {args.batch_size}, grad checkpointing {'on ' if checkpointing else 'off'}: "
              f"peak {peak:.2f} GiB, {speed:.0f} img/s", flush=True)
    if None in results.values():
        return
    print(f"checkpointing: {1 - results[True][0] / results[False][0]:.0%} less memory, "
          f"{results[False][1] / results[True][1]:.2f}x the time per image")
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    largest = largest_batch(args, cfg, device, amp, False, results[False][0], total)
    print(f"largest batch that fits in {total:.0f} GiB (no grad checkpointing): {largest}", flush=True)


def largest_batch(args, cfg, device, amp, checkpointing: bool, peak_at_batch: float, total: float) -> int:
    """The largest batch found to fit: a guess from the peak at --batch-size (memory grows linearly
    with the batch), then steps of 4% down from the first guess that fails or up from one that fits."""
    def fits_at(batch_size: int):
        return peak_and_speed(args, cfg, device, amp, batch_size, checkpointing, timed=False)
    fixed = fits_at(8)[0]
    per_image = (peak_at_batch - fixed) / (args.batch_size - 8)
    guess = int((total * 0.98 - fixed) / per_image) + 8
    fits = fits_at(guess) is not None
    best = guess if fits else 0
    for _ in range(4):
        guess = int(guess * (1.04 if fits else 0.96))
        if fits_at(guess) is not None:
            best = max(best, guess)
            if not fits:
                break
        elif fits:
            break
    return best


# --- Where the time goes ---

def profile_steps(args, device, amp):
    """The operators that take the time in a few steps of bare's and of timm's training step (torch.profiler):
    what to make faster, on the machine that counts."""
    from torch.profiler import ProfilerActivity, profile
    # the profiler's own library (kineto) writes its start and stop, and on a CUDA build without a GPU an ERROR
    # line, straight to stderr, where the table is what counts; read when a profile starts (KINETO_LOG_LEVEL=0
    # shows them again)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    cfg = train_config(args)
    states, variants, batch, _ = step_states(args, cfg, device, amp)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"  # kernels, not callers
    for name, state in states.items():
        use(variants.get(name))
        step_round(state, cfg, batch, 3)  # warm-up
        with profile(activities=activities) as prof:
            step_round(state, cfg, batch, args.steps)
        print(f"== {name}: {counted(args.steps, 'step')}, the {args.profile} operators that take the most time",
              flush=True)
        print(prof.key_averages().table(sort_by=sort, row_limit=args.profile, max_name_column_width=60), flush=True)


def main():
    args = parse_args()
    device = args.device
    amp = amp_dtype(args.amp, device, training=True)
    tune_for(device, tf32=amp is None)  # as train.py
    use(next(iter(bare_variants(args).values())))  # --memory's, --profile's, e2e's: the first kinds named
    print_header(device)
    if args.memory:
        compare_memory(args, device, amp)
    elif args.profile:
        profile_steps(args, device, amp)
    else:
        compare_speed(args, device, amp)


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
