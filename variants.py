"""The variants: their official names (and the official files' and timm's spellings of them), sizes from the
papers (V1 Sec. 3.3, V2 Sec. 4.1) and training settings from the official configs; plain data, no torch.
model.create_model builds them (and model.py imports these names, as the tutorial's code imports them from it).
"""
import difflib

from utils import UserError

SIZES = {
    "micro": dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
# drop_path_rate: the official configs' value for training each size from scratch on ImageNet-1k; the ImageNet-22k
# pre-training and 22k->1k fine-tuning configs (configs/swin/*_22k.yaml, *_22kto1k_finetune.yaml) set their own,
# which the 22k variants take, and the 1k ones whose official weights are 22k->1k fine-tuned (download.py).
_DROP_PATH = {"micro": 0.0, "tiny": 0.2, "small": 0.3, "base": 0.5, "large": 0.2}
_DROP_PATH_22K = {"tiny": 0.1, "small": 0.2, "base": 0.2, "large": 0.2}
IN22K_CLASSES = 21841


def _variant(size, window, img, version=1, classes=1000, pretrained_windows=None, drop_path=None):
    if pretrained_windows is None:
        # V2: the windows its weights were trained with, each stage's clamped to its map at the variant's
        # image size: at another window or image size, the position-bias MLP is still fed offsets on the
        # scale it learned them (V2 Sec. 3.3); at its own, the same as its own windows. V1 has no use for them.
        pretrained_windows = tuple(min(window, img // 4 // 2 ** i) for i in range(4)) if version == 2 else (0,) * 4
    return dict(SIZES[size], window_size=window, img_size=img, version=version, num_classes=classes,
                pretrained_window_sizes=pretrained_windows,
                drop_path_rate=drop_path if drop_path is not None else
                (_DROP_PATH_22K if classes == IN22K_CLASSES else _DROP_PATH)[size])


VARIANTS = {
    # Ours, for demos and tests on a CPU: no official weights exist for it.
    "swin_micro_patch4_window4_128": _variant("micro", 4, 128),
    "swin_tiny_patch4_window7_224": _variant("tiny", 7, 224),
    "swin_small_patch4_window7_224": _variant("small", 7, 224),
    "swin_base_patch4_window7_224": _variant("base", 7, 224, drop_path=_DROP_PATH_22K["base"]),
    "swin_base_patch4_window12_384": _variant("base", 12, 384, drop_path=_DROP_PATH_22K["base"]),
    "swin_large_patch4_window7_224": _variant("large", 7, 224),
    "swin_large_patch4_window12_384": _variant("large", 12, 384),
    "swin_tiny_patch4_window7_224_in22k": _variant("tiny", 7, 224, classes=IN22K_CLASSES),
    "swin_small_patch4_window7_224_in22k": _variant("small", 7, 224, classes=IN22K_CLASSES),
    "swin_base_patch4_window7_224_in22k": _variant("base", 7, 224, classes=IN22K_CLASSES),
    "swin_base_patch4_window12_384_in22k": _variant("base", 12, 384, classes=IN22K_CLASSES),
    "swin_large_patch4_window7_224_in22k": _variant("large", 7, 224, classes=IN22K_CLASSES),
    "swin_large_patch4_window12_384_in22k": _variant("large", 12, 384, classes=IN22K_CLASSES),
    "swinv2_tiny_patch4_window8_256": _variant("tiny", 8, 256, 2),
    "swinv2_tiny_patch4_window16_256": _variant("tiny", 16, 256, 2),
    "swinv2_small_patch4_window8_256": _variant("small", 8, 256, 2),
    "swinv2_small_patch4_window16_256": _variant("small", 16, 256, 2),
    "swinv2_base_patch4_window8_256": _variant("base", 8, 256, 2),
    "swinv2_base_patch4_window16_256": _variant("base", 16, 256, 2),
    "swinv2_base_patch4_window12_192": _variant("base", 12, 192, 2, IN22K_CLASSES),
    "swinv2_large_patch4_window12_192": _variant("large", 12, 192, 2, IN22K_CLASSES),
    # fine-tuned from the 192 px, window 12 models: the last stage was pre-trained at window 6
    "swinv2_base_patch4_window12to16_192to256": _variant("base", 16, 256, 2, 1000, (12, 12, 12, 6), 0.2),
    "swinv2_base_patch4_window12to24_192to384": _variant("base", 24, 384, 2, 1000, (12, 12, 12, 6), 0.2),
    "swinv2_large_patch4_window12to16_192to256": _variant("large", 16, 256, 2, 1000, (12, 12, 12, 6)),
    "swinv2_large_patch4_window12to24_192to384": _variant("large", 24, 384, 2, 1000, (12, 12, 12, 6)),
}
NO_PRETRAINED_WEIGHTS = {"swin_micro_patch4_window4_128"}


def _aliases():
    """Other spellings of the variant names: the official checkpoint files' and timm's."""
    aliases = {}
    for name in VARIANTS:
        if name.endswith("_in22k"):
            aliases[name[:-len("_in22k")] + "_22k"] = name  # official file name
            aliases[name[:-len("_in22k")] + ".ms_in22k"] = name  # timm
        elif name.startswith("swinv2_"):
            aliases[name.replace("_patch4", "")] = name  # timm: swinv2_tiny_window8_256
            if "to" in name:
                aliases[name + "_22kto1k_ft"] = name
            elif VARIANTS[name]["num_classes"] == IN22K_CLASSES:
                aliases[name + "_22k"] = name
        else:
            aliases[name + "_22kto1k"] = name
            aliases[name + "_22kto1k_finetune"] = name  # the official files of release v1.0.8
    return aliases


ALIASES = _aliases()


def resolve_variant(name: str) -> str:
    """The canonical variant name for `name` or one of its aliases; a UserError otherwise."""
    if name in VARIANTS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    base = name.split(".")[0]  # timm pretrained tags: swin_tiny_patch4_window7_224.ms_in1k
    if base in VARIANTS or base in ALIASES:
        return resolve_variant(base)
    # a short form (swin_tiny, swinv2_base) names the variants that begin with it; else near spellings, of a
    # whole name or of a short form (swin_tinyy: the swin_tiny variants)
    shorts = {"_".join(v.split("_")[:2]) for v in VARIANTS}
    near = difflib.get_close_matches(name.lower(), shorts, n=1)
    close = [v for v in VARIANTS if v.startswith(name.lower())][:4] or \
        difflib.get_close_matches(name, list(VARIANTS) + list(ALIASES), n=3) or \
        [v for v in VARIANTS if near and v.startswith(near[0] + "_")][:4]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"unknown model {name!r}.{hint} Valid models: {', '.join(VARIANTS)}")


# The variants' drop path rates before 2026-11-30, when they became their official configs' (above): a checkpoint
# from before then that holds no rate of its own goes on at the rate it was trained with. (Checkpoints written that
# day between the two changes, 12:10 to 12:52 UTC, trained at the new rates and go on at these: none left this
# project's machines.)
DROP_PATH_BEFORE = {"swin_base_patch4_window7_224": 0.5, "swin_base_patch4_window12_384": 0.5,
                    "swin_tiny_patch4_window7_224_in22k": 0.2, "swin_small_patch4_window7_224_in22k": 0.3,
                    "swin_base_patch4_window7_224_in22k": 0.5, "swin_base_patch4_window12_384_in22k": 0.5}
