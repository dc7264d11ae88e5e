"""Export a trained classifier for deployment: TorchScript with its preprocessing inside.

    python predict.py --export flowers.pt --weights runs/<name>/best.pth
    program = torch.jit.load("flowers.pt")
    probs = program.probabilities(images)   # (B, 3, H, W) uint8 or [0, 1] floats, any H x W
    labels = program.class_names

The deployer needs no mean, std, crop or resize rules: they travel in the file.
"""
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from model import create_model


class Deployable(torch.nn.Module):
    """What --export writes: (B, 3, H, W) images, uint8 0-255 or float 0-1, any H x W -> (B, classes) logits.

    Another size than `img_size` is center-cropped and resized as predict.py does it (data.center_box,
    bilinear, antialiased); `probabilities(images)` gives the softmax, `class_names` the labels.
    """

    def __init__(self, net, clf):
        super().__init__()
        self.net, self.class_names, self.img_size = net, list(clf.class_names), int(clf.model.img_size)
        self.resize_to = math.floor(self.img_size / clf.crop_pct)
        self.register_buffer("mean", torch.tensor(clf.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(clf.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # a deployed model is not trained: no autograd bookkeeping
            x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
            size, h, w = self.img_size, x.shape[-2], x.shape[-1]
            if h != size or w != size:  # crop first, then resize: predict.py's pixel grid, not a shifted one
                side = size / self.resize_to * min(h, w)
                top, left = int(round((h - side) / 2)), int(round((w - side) / 2))
                bottom, right = max(int(round((h + side) / 2)), top + 1), max(int(round((w + side) / 2)), left + 1)
                x = F.interpolate(x[:, :, top:bottom, left:right], size=[size, size], mode="bilinear",
                                  antialias=True, align_corners=False)
            return self.net((x - self.mean) / self.std)

    @torch.jit.export
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images).softmax(-1)


def export_torchscript(clf, path: Path, device) -> None:
    """Trace the model, script the preprocessing around it, check the result, save it.

    While tracing, the input's sizes are traced values, so the stages' window layouts and gather
    indices are recorded as operations on the batch size (checked below at another batch size), but
    which windows need a mask is decided for img_size, which is why Deployable resizes to it. The
    trace is made from a fresh model, since it leaves layouts keyed by those traced values in the
    stages' caches.
    """
    fresh = create_model(clf.model.variant, **clf.model.overrides).to(device).eval()
    fresh.load_state_dict(clf.model.state_dict())
    size = fresh.img_size
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; tracer notes on the layout's numbers
        program = torch.jit.script(Deployable(torch.jit.trace(fresh, torch.randn(2, 3, size, size, device=device),
                                                              check_trace=False), clf))
        check = torch.rand(3, 3, size, size, device=device)  # another batch size than the trace's
        want, got = clf.model((check - program.mean) / program.std), program(check)
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item())):
            raise RuntimeError(f"the exported program is off the model by {(got - want).abs().max():.3g}; not saved")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(program, str(path))
