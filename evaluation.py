"""Evaluation: loss, top-1, top-5, balanced accuracy and the confusion matrix of a model (or an exported
program) over a loader, summed exactly over the processes of a torchrun run, and every mistake with its top-3
predictions and class activation map (what report.py shows); of a saved checkpoint's weights; per-class
precision and recall; and predict.py's classifying of photos (classify).
"""
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import plots
from checkpoints import load_checkpoint
from data import to_device
from loaders import ImageDataset, build_loader
from model import maps_of
from precision import autocast, forget_held_casts
from stopping import held_signals
from processes import distributed, from_all_processes, from_first_process, reduce_sums


@torch.no_grad()
def evaluate(model: nn.Module, loader, normalize, num_classes: int, device, amp, show_progress: bool = True) -> dict:
    """Loss, top-1, top-5, balanced accuracy and the confusion matrix (rows: true class), summed
    exactly over ranks; also, from all ranks, every misclassified image as (path, true label, its
    top-3 labels, their probabilities), the first of them the prediction, and ("maps", by path) where in the
    image the model saw the class it chose (its class activation map, a list of rows: a model with
    forward_with_maps). `normalize` makes the model's input of the loader's uint8 batches; None for a program
    that --export wrote, which takes them as they are."""
    model.eval()
    forget_held_casts()  # weights changed since (a fused step, a broadcast) may keep their versions
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    top_k = torch.zeros((), dtype=torch.float64, device=device)
    # everything stays on the device until the end: a read per batch would make the CPU wait for the GPU
    # (so the confusion matrix is counted by index_put_, not bincount, which reads back the largest index)
    outcomes, kept_paths, failed, heats = [], [], [], []
    with_maps = hasattr(model, "forward_with_maps")  # a Swin's maps come with its logits; a program gives logits only
    # on a terminal only (disable=None), as predict.py's: piped (| tee log, > file) its frames filled the log
    bar = tqdm(loader, desc="eval", disable=None if show_progress else True, leave=False)
    for images, labels, paths, failed_paths in bar:
        failed += failed_paths
        if len(labels) == 0:
            continue
        images, labels, _ = to_device(images, labels, paths, device)
        images = images if normalize is None else normalize(images)
        with autocast(device, amp):
            logits, maps = model.forward_with_maps(images) if with_maps else (model(images), None)
            logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        predictions = logits.argmax(-1)
        if maps is not None:  # each image's map of its predicted class, (B, H/32, W/32)
            heats.append(maps_of(maps, predictions).float())
        confusion.index_put_((labels, predictions), torch.ones_like(labels, dtype=confusion.dtype), accumulate=True)
        top_k += (logits.topk(k, dim=-1).indices == labels[:, None]).any(-1).sum()
        outcomes.append((labels, predictions, *logits.softmax(-1).topk(min(3, num_classes), dim=-1)))
        kept_paths += paths
    wrong = misclassified(outcomes, kept_paths)
    wrong_paths = {mistake[0] for mistake in wrong}
    maps = {path: heat.tolist() for path, heat in zip(kept_paths, torch.cat(heats).cpu() if heats else [])
            if path in wrong_paths}
    sums = reduce_sums(torch.cat([loss_sum.view(1), top_k.view(1), confusion.flatten()]))
    confusion = sums[2:].view(num_classes, num_classes).long().cpu()
    count = max(int(confusion.sum()), 1)
    gathered = from_all_processes((wrong, maps, failed))
    wrong = [mistake for part, _, _ in gathered for mistake in part]
    maps = {path: heat for _, part, _ in gathered for path, heat in part.items()}
    failed = [path for _, _, part in gathered for path in part]
    return {"loss": sums[0].item() / count, "acc1": confusion.trace().item() / count,
            "acc5": sums[1].item() / count, "balanced_acc": balanced_accuracy(confusion),
            "confusion": confusion, "wrong": wrong, "maps": maps, "failed": failed, "images": int(confusion.sum())}


def evaluate_saved(model: nn.Module, path, loader, normalize, num_classes: int, device, amp,
                   main_process: bool = True) -> tuple | None:
    """(evaluation, description) of the weights a checkpoint at `path` holds (train.py's best.pth, for a run whose
    epochs since its resume scored lower), loaded into `model`; None where there is no such file. The first
    process reads it (it wrote it; another machine may not see the file) and sends the weights to the others,
    and all evaluate their shares."""
    if not from_first_process(Path(path).is_file()):  # resumed from a copy of last.pth alone, or best.pth deleted
        return None
    saved = load_checkpoint(path) if main_process else None
    if main_process:
        model.load_state_dict(saved["model"])
    if distributed():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)
    result = evaluate(model, loader, normalize, num_classes, device, amp, False)
    return result, f"{path} (epoch {saved['epoch']})" if main_process else None


def misclassified(outcomes: list, paths: list) -> list:
    """(path, true label, top-3 labels, their probabilities) of each misclassified image, from evaluate's
    (labels, predictions, top-3 probabilities, top-3 labels) of each batch, read back once."""
    if not outcomes:
        return []
    labels, predictions, probs, top = (torch.cat(parts).tolist() for parts in zip(*outcomes))
    return [(path, label, top_labels, top_probs) for path, label, prediction, top_labels, top_probs
            in zip(paths, labels, predictions, top, probs) if prediction != label]


def per_class_metrics(confusion: torch.Tensor) -> list:
    """(precision, recall, F1, support) per class from a confusion matrix (rows: true class). Precision is None
    for a class never predicted, recall for one with no image in the split, F1 (2 TP / (2 TP + FP + FN)) for one
    neither predicted nor present: there is nothing to measure, and 0 would read as a class always missed."""
    metrics = []
    for tp, predicted, actual in zip(confusion.diag().tolist(), confusion.sum(0).tolist(), confusion.sum(1).tolist()):
        wrong = predicted + actual - 2 * tp  # false positives and false negatives
        metrics.append((tp / predicted if predicted else None, tp / actual if actual else None,
                        2 * tp / (2 * tp + wrong) if tp or wrong else None, int(actual)))
    return metrics


def balanced_accuracy(confusion: torch.Tensor) -> float:
    """The mean per-class recall over the classes that have images (sklearn's balanced_accuracy_score):
    top-1 as if every class had as many images."""
    actual = confusion.sum(1)
    present = actual > 0
    if not present.any():
        return 0.0
    return (confusion.diag()[present].double() / actual[present]).mean().item()


def classify(model, paths: list[str], transform, normalize, device, amp, batch_size: int, workers: int,
             tta: bool = False, cam: bool = False, progress: bool = True):
    """(path, probabilities, seen) for each image in order; (path, None, None) for one that cannot be read.
    `transform` makes each image a uint8 crop; `normalize` (None for a program) the model's input of a batch.
    With `cam`, `seen` is the crop tinted where the model saw its top class (plots.heat_overlay); else None. `tta`:
    the mean of the photo's and its mirror's probabilities (predict.py's)."""
    few = len(paths) <= batch_size  # one batch: worker processes would cost more than they save
    loader = build_loader(ImageDataset([(p, 0) for p in paths], transform), batch_size, train=False,
                          num_workers=0 if few else workers)

    def run(x):  # (logits, class activation maps or None)
        return model.forward_with_maps(x) if cam else (model(x), None)
    bar = tqdm(total=len(paths), desc="classifying", unit="img", file=sys.stderr, leave=False,
               disable=True if few or not progress else None)
    with held_signals():  # a Ctrl-C while the workers fork: taken once they ignore it (stopping.held_signals)
        batches = iter(loader)
    for start, (images, _, loaded, _) in zip(range(0, len(paths), batch_size), batches):
        probs, seen = {}, {}
        if loaded:
            with torch.inference_mode(), autocast(device, amp):
                x = images.to(device, non_blocking=True)
                x = x if normalize is None else normalize(x)
                out, maps = run(x)
                out = out.float().softmax(-1)
                if tta:  # the class does not change in a mirror; the model's errors partly do
                    mirrored, mirrored_maps = run(x.flip(-1))
                    out = (out + mirrored.float().softmax(-1)) / 2
                    maps = None if maps is None else (maps + mirrored_maps.flip(2)) / 2  # mirrored back
            probs = dict(zip(loaded, out.cpu()))
            if maps is not None:  # each image's map of its top class: (B, H/32, W/32)
                heat = maps_of(maps, out.argmax(-1)).float().cpu().numpy()
                seen = {path: plots.heat_overlay(crop.permute(1, 2, 0).numpy(), map_)
                        for path, crop, map_ in zip(loaded, images, heat)}
        batch = paths[start:start + batch_size]  # the loader keeps the order and batches alike
        bar.update(len(batch))
        yield from ((path, probs.get(path), seen.get(path)) for path in batch)
    bar.close()
