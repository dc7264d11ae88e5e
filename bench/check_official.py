"""Do official Microsoft checkpoints load here and give the official model's outputs? The official code
answers: a checkout of github.com/microsoft/Swin-Transformer, whose models/ this script imports (none of it
is copied into this project), builds each variant below with random weights, saved as the released .pth
files are ({'model': state_dict}, the official buffers included); weights.load_weights loads that file into
this project's model, as train.py --weights and predict.py --weights do, and both run the same images in
fp32. No download: the weights are random, the code is the official one.

    git clone https://github.com/microsoft/Swin-Transformer ../Swin-Transformer
    python bench/check_official.py --official ../Swin-Transformer

Prints each variant's largest logit difference and exits 1 if one is above --tolerance (docs/models.md: Faithful to
the official checkpoints). The weights are moved well off their initial values first (norms, biases,
position-bias tables and MLPs, V2's logit scales), so that no block passes its input through unchanged, as
V2's zero-initialised post-norms would, and every position counts: with V2's pretrained window sizes left
out of the official model, its logits differ from the project's by 8e-3 (with them, 1e-6).
"""
import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import print_header  # noqa: E402  (bench/ is on the path)
from download import OFFICIAL_WEIGHTS  # noqa: E402
from model import create_model  # noqa: E402
from variants import VARIANTS  # noqa: E402
from weights import load_weights  # noqa: E402

TINY = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]}
BASE = {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]}
# this project's variant: (official model class, its arguments as the official configs/*.yaml give them)
CASES = {
    "swin_tiny_patch4_window7_224": ("SwinTransformer", {**TINY, "img_size": 224, "window_size": 7}),
    "swin_tiny_patch4_window7_224_in22k": ("SwinTransformer", {**TINY, "img_size": 224, "window_size": 7,
                                                               "num_classes": 21841}),
    "swin_base_patch4_window12_384": ("SwinTransformer", {**BASE, "img_size": 384, "window_size": 12}),
    "swinv2_tiny_patch4_window8_256": ("SwinTransformerV2", {**TINY, "img_size": 256, "window_size": 8}),
    "swinv2_base_patch4_window12to16_192to256": ("SwinTransformerV2", {
        **BASE, "img_size": 256, "window_size": 16, "pretrained_window_sizes": [12, 12, 12, 6]}),
    # window 24 at 384 (a stage whose map is its window: no shift) and the 22k model at 192 (last stage 6 x 6)
    "swinv2_base_patch4_window12to24_192to384": ("SwinTransformerV2", {
        **BASE, "img_size": 384, "window_size": 24, "pretrained_window_sizes": [12, 12, 12, 6]}),
    "swinv2_base_patch4_window12_192": ("SwinTransformerV2", {**BASE, "img_size": 192, "window_size": 12,
                                                               "num_classes": 21841}),
}


def official_config(checkout: Path, variant: str) -> dict | None:
    """The official configs/*.yaml that made `variant`'s released weights (download.py's file name), merged over
    the official config.py's defaults that matter here; None where the checkout has none for it."""
    import yaml
    stem = Path(OFFICIAL_WEIGHTS[variant]).stem
    if stem.startswith("swin_") and stem.endswith("_22kto1k"):
        stem += "_finetune"
    found = [p for p in (checkout / "configs").rglob(f"{stem}.yaml")]
    if not found:
        return None
    cfg = yaml.safe_load(found[0].read_text())
    model = cfg.get("MODEL", {})
    arch = model.get("SWINV2") or model.get("SWIN") or {}
    img = cfg.get("DATA", {}).get("IMG_SIZE", 224)
    window = arch.get("WINDOW_SIZE", 7)
    pretrained = arch.get("PRETRAINED_WINDOW_SIZES", [0, 0, 0, 0])
    clamped = [min(window, img // 4 // 2 ** i) for i in range(4)]  # the official block's window at its map
    return {"embed_dim": arch.get("EMBED_DIM", 96), "depths": tuple(arch.get("DEPTHS", (2, 2, 6, 2))),
            "num_heads": tuple(arch.get("NUM_HEADS", (3, 6, 12, 24))), "window_size": window, "img_size": img,
            "drop_path_rate": model.get("DROP_PATH_RATE", 0.1),
            # what the position-bias MLP's offsets are divided by (less one), per stage: V2 only
            **({"pretrained_window_sizes": tuple(p or w for p, w in zip(pretrained, clamped))}
               if model.get("TYPE") == "swinv2" else {}),
            "test_crop": cfg.get("TEST", {}).get("CROP", True), "file": found[0].name}


def check_configs(checkout: Path) -> list:
    """Each variant's hyperparameters against the official config of its weights: lines for those that differ."""
    lines = []
    for variant in OFFICIAL_WEIGHTS:
        cfg = official_config(checkout, variant)
        if cfg is None:
            continue
        ours = VARIANTS[variant]
        for key in ("embed_dim", "depths", "num_heads", "window_size", "img_size", "drop_path_rate",
                    "pretrained_window_sizes"):
            if key not in cfg:
                continue
            mine = tuple(ours[key]) if isinstance(cfg[key], tuple) else ours[key]
            if mine != cfg[key]:
                lines.append(f"{variant}: {key} {ours[key]}, official {cfg[key]} ({cfg['file']})")
        if not cfg["test_crop"]:
            lines.append(f"{variant}: evaluated officially without a centre crop (TEST.CROP False, {cfg['file']})")
    return lines


def official_models(checkout: Path):
    """The official repo's models/swin_transformer.py and swin_transformer_v2.py, imported as they are."""
    if not (checkout / "models" / "swin_transformer_v2.py").is_file():
        sys.exit(f"error: {checkout} is not a checkout of microsoft/Swin-Transformer "
                 "(no models/swin_transformer_v2.py)")
    sys.path.insert(0, str(checkout / "models"))
    import swin_transformer
    import swin_transformer_v2
    return {"SwinTransformer": swin_transformer.SwinTransformer,
            "SwinTransformerV2": swin_transformer_v2.SwinTransformerV2}


@torch.no_grad()
def move_off_init(model: torch.nn.Module, generator: torch.Generator) -> None:
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator)
        if name.endswith("logit_scale"):
            p.copy_(math.log(10) + 0.7 * noise)  # some above the cap of log(100) that the forward pass applies
        elif p.ndim == 1 or "relative_position_bias_table" in name or "cpb_mlp" in name:
            # norms' weights off 1 (V2's post-norms off 0), biases and V1's bias tables off 0, and V2's bias
            # MLP far enough from its initial weights that the bias depends on the positions' coordinates
            p.add_(0.3 * noise)
        else:
            p.add_(0.02 * noise)


def check(variant: str, official_class, arguments: dict, folder: Path) -> float:
    generator = torch.Generator().manual_seed(0)
    official = official_class(drop_path_rate=0.0, **arguments).eval()
    move_off_init(official, generator)
    path = folder / f"{variant}.pth"
    torch.save({"model": official.state_dict()}, path)  # as the released files hold it
    ours = create_model(variant, num_classes=arguments.get("num_classes", 1000)).eval()
    report = load_weights(ours, path, verbose=False)
    if report["missing"] or report["unexpected"] or report["skipped"]:
        sys.exit(f"error: {variant}: not every tensor loaded: {report}")
    size = arguments["img_size"]
    images = torch.randn(2, 3, size, size, generator=generator)
    with torch.no_grad():
        return (ours(images) - official(images)).abs().max().item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--official", type=Path, required=True,
                        help="a checkout of github.com/microsoft/Swin-Transformer")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest logit difference that passes")
    parser.add_argument("--variants", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args(argv)
    print_header()
    differ = check_configs(args.official.resolve())
    for line in differ:
        print("config:", line)
    classes = official_models(args.official.resolve())
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants:
            name, arguments = CASES[variant]
            difference = check(variant, classes[name], arguments, Path(folder))
            worst = max(worst, difference)
            print(f"{variant:42s} largest logit difference {difference:.1e}  "
                  f"{'ok' if difference <= args.tolerance else 'FAILED'}", flush=True)
    sys.exit(0 if worst <= args.tolerance and not any("evaluated" not in line for line in differ) else 1)


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
