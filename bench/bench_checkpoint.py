"""How long saving a checkpoint holds up training: train.py's checkpoint (the model, its AdamW state, the
schedule, the random states) written by checkpoints.CheckpointWriter, as train.py writes it, against
checkpoints.save_checkpoint called in the loop, as train.py wrote it before: the loop then waited for the
whole write and its sync, now for the copy of the tensors to the host only, the write going on beside
the next steps. Rounds alternate the two ways; each writes the same file, in a folder of its own.

    python bench/bench_checkpoint.py                              # swin_tiny on the CPU, into a temporary folder
    python bench/bench_checkpoint.py --device cuda --folder runs  # where the runs go: the disk counts
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_header  # noqa: E402  (bench/ is on the path)
from utils import counted  # noqa: E402
from config import POSITIVE_INT  # noqa: E402
import engine  # noqa: E402
import train  # noqa: E402
from model import create_model  # noqa: E402
from checkpoints import CheckpointWriter, save_checkpoint  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="swin_tiny_patch4_window7_224")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--folder", type=Path, help="where to write (default: a temporary folder)")
    p.add_argument("--rounds", type=POSITIVE_INT, default=5, help="default: 5")
    args = p.parse_args()
    from utils import select_device
    args.device = select_device(args.device)  # --device cuda without a GPU: one line, not CUDA's traceback
    return args


def trained_state(args) -> engine.TrainState:
    """train.py's training state after one step (AdamW's moments exist), 5 classes, tiny images."""
    device = args.device
    model = create_model(args.model, num_classes=5, img_size=64).to(device)
    cfg = train.build_parser().parse_args(["--model", args.model])
    state = engine.build_train_state(cfg, model, model, device, None, 100, [1] * 5)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, device=device)
    engine.train_step(state, images, torch.tensor([0, 1], device=device), cfg)
    return state


def main():
    args = parse_args()
    print_header(args.device)
    state = trained_state(args)
    held = {"in the loop": [], "CheckpointWriter": []}
    written = []
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = Path(folder) / "last.pth"
        def in_the_loop():
            start = time.perf_counter()
            save_checkpoint(state.checkpoint(), path)
            held["in the loop"].append(time.perf_counter() - start)

        def beside():
            writer = CheckpointWriter()
            start = time.perf_counter()
            writer.save(state.checkpoint(), path)
            held["CheckpointWriter"].append(time.perf_counter() - start)
            writer.close()
            written.append(time.perf_counter() - start)
        for round_ in range(args.rounds):
            for way in (in_the_loop, beside) if round_ % 2 == 0 else (beside, in_the_loop):  # neither always first
                way()
            print(f"round {round_ + 1}: " + ", ".join(f"{way} {times[-1]:.3f} s" for way, times in held.items()),
                  flush=True)
        size = path.stat().st_size / 1e6
    print(f"# {args.model}, {size:.0f} MB a checkpoint, on {args.device}; medians of {counted(args.rounds, 'round')}")
    for way, times in held.items():
        print(f"training held by a save, {way}: {statistics.median(times):.3f} s")
    print(f"CheckpointWriter's write done after {statistics.median(written):.3f} s")
    print(f"held, in the loop / CheckpointWriter: "
          f"{statistics.median(held['in the loop']) / statistics.median(held['CheckpointWriter']):.1f}x")


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
