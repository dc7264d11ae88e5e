"""Weights for model.py's networks: official Microsoft checkpoints, timm's, and this project's own.

    from model import create_model
    from weights import load_weights
    model = create_model("swin_tiny_patch4_window7_224", num_classes=5)
    report = load_weights(model, "weights/swin_tiny_patch4_window7_224.pth")

Checkpoints are found inside their wrappers ({'model': ...}, DDP's `module.`, torch.compile's
`_orig_mod.`), converted from timm's layout to the official one, checked against the model's
architecture (another variant is one clear error naming it), and adapted where the official loader
adapts them: V1 position-bias tables resized to another window, the classifier dropped for another
class count. Buffers the model rebuilds from its geometry are never loaded. model_from_state_dict
builds the classifier that a bare file of weights holds, given its variant; create_model_from_checkpoint
the network that a train.py checkpoint describes; model_for_run the one a train.py run starts from;
load_classifier what predict.py classifies with, from any of these or from an exported program.
"""
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from config import plain
from data import IMAGENET_MEAN, IMAGENET_STD, preprocessing_of, recipe_preprocessing
from download import OFFICIAL_WEIGHTS, names_official_file, official_weights_file, tutorial_weights_file
from export import is_program, load_program
from images import letters, read_class_indices, same_names
from model import REBUILT_BUFFERS, WINDOW_SETTINGS, create_model
from variants import DROP_PATH_BEFORE, SIZES, VARIANTS, resolve_variant
from checkpoints import is_run_checkpoint, load_checkpoint
from runs import checkpoint_of_run, newest_run_checkpoint
from utils import UserError
from windows import log_spaced_coords


def unwrap_state_dict(obj, source="the state dict given") -> dict:
    """Find the model's tensors in a checkpoint: {'model': ...}, {'state_dict': ...} or bare."""
    if not isinstance(obj, dict):
        raise UserError(f"{source} holds a {type(obj).__name__}, not a state dict or a checkpoint dict of them")
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        while key.startswith(("module.", "_orig_mod.")):  # DDP's and torch.compile's wrappers, nested either way
            key = key.split(".", 1)[1]
        state[key] = value
    nested = [key for key, value in obj.items()
              if isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values())]
    if not state and nested:  # {'net': ...}, {'model_ema': ...}: said, where "it holds no tensors" was not so
        raise UserError(f"{source} holds its tensors under {', '.join(repr(k) for k in nested[:4])}, not a key "
                        f"weights are looked for under ('model', 'state_dict', 'model_state_dict'): save the ones to "
                        f"use alone, torch.save(checkpoint[{nested[0]!r}], 'weights.pth'), and give that file")
    return state


def is_timm_layout(state: dict) -> bool:
    """timm puts patch merging at the start of the next stage and names the classifier head.fc."""
    return "head.fc.weight" in state or (
        not any(k.startswith("layers.0.downsample.") for k in state)
        and any(re.match(r"layers\.\d+\.downsample\.", k) for k in state))


def from_the_official_code(state: dict) -> bool:
    """Whether a state dict comes from the official code (it keeps the index buffers) or timm's (its layout), both
    of which give a V1 stage whose map is smaller than the window a window of the map's side (small_map_windows),
    not from this project's, whose stages read the centre of the window's table there (its own runs' state dicts,
    which train.py's checkpoints and the tutorial's torch.save of one hold), nor from the tutorial's code, which
    pads such a map and reads the whole table (from_the_tutorials_code)."""
    return is_timm_layout(state) or any(key.endswith("relative_position_index") for key in state) and \
        not from_the_tutorials_code(state)


def from_the_tutorials_code(state: dict) -> bool:
    """Whether a V1 state dict was saved by the tutorial's model.py: it keeps the index buffers as the official code
    does, but not the shift masks (which it builds in each forward pass), and it shifts a stage whose map is as
    large as its window, where the official code does not (SwinTransformer.set_tutorial_shift)."""
    return (any(key.endswith("relative_position_index") for key in state) and not is_timm_layout(state)
            and not any(key.endswith("attn_mask") for key in state) and "layers.0.blocks.0.attn.cpb_mlp.0.weight"
            not in state)


def to_official_layout(state: dict) -> dict:
    """The official names: timm's (is_timm_layout) renamed; the buffers that the model rebuilds left out."""
    timm_layout = is_timm_layout(state)
    out = {}
    for key, value in state.items():
        if key.endswith(REBUILT_BUFFERS):
            continue
        if timm_layout:
            key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
            key = re.sub(r"^head\.fc\.", "head.", key)
        out[key] = value
    return out


def describe_architecture(state: dict) -> dict:
    """Version, embed_dim, depths and num_heads read off a state dict in official layout."""
    info = {"version": 2 if any(k.endswith("cpb_mlp.0.weight") for k in state) else 1}
    if "patch_embed.proj.weight" in state:
        info["embed_dim"] = state["patch_embed.proj.weight"].shape[0]
    blocks = {}
    for key in state:
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", key)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    if blocks:
        info["depths"] = tuple(blocks.get(i, 0) for i in range(max(blocks) + 1))
        heads = []
        for i in range(len(info["depths"])):
            v1_table = state.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table")
            v2_scale = state.get(f"layers.{i}.blocks.0.attn.logit_scale")
            heads.append(v1_table.shape[1] if v1_table is not None else
                         v2_scale.shape[0] if v2_scale is not None else None)
        info["num_heads"] = tuple(heads)
    return info


def _architecture_name(info: dict) -> str:
    for size, dims in SIZES.items():
        if all(info.get(k, v) == v for k, v in dims.items()):
            return f"Swin{' V2' if info['version'] == 2 else ''} {size}"
    return "a Swin model"


def matching_variants(info: dict) -> list:
    """The variants whose architecture fits what describe_architecture read off a state dict."""
    keys = [k for k in ("version", "embed_dim", "depths", "num_heads") if k in info]
    return [name for name, cfg in VARIANTS.items() if all(cfg[k] == info[k] for k in keys)]


def check_is_swin(state: dict, source) -> None:
    """Weights of another network, or a file of no weights, are one clear error, not a model that
    loads nothing and trains from scratch."""
    if not any(re.match(r"layers\.\d+\.blocks\.\d+\.", key) for key in state):  # not a ViT's patch_embed alone
        # a Swin inside another module (Lightning's `model.`, a detector's `backbone.`): said, not "no Swin weights"
        inside = sorted({m.group(1) for key in state
                         if (m := re.match(r"(.+?\.)layers\.\d+\.blocks\.\d+\.(?:attn|norm1|mlp)\.", key))})
        if inside:
            raise UserError(f"{source} holds Swin weights under the prefix {inside[0]!r}, not as a Swin model's own "
                            f"names: save them without it (state being its dict of tensors), torch.save("
                            f"{{k[{len(inside[0])}:]: v for k, v in state.items() if k.startswith({inside[0]!r})}}, "
                            "'weights.pth'), and give that file")
        if any(re.match(r"stages\.\d+\.blocks\.\d+\.attn\.(logit_scale|meta_mlp\.)", key) for key in state):
            raise UserError(f"{source} holds a Swin of another naming (its blocks under stages., as timm's swinv2_cr_* "
                            "models name them, a network of other layers than the official V2's): give an official "
                            "file, or timm's swin_* or swinv2_* weights (not swinv2_cr_*), or a train.py checkpoint")
        held = (f"its tensors are named {', '.join(list(state)[:3])}{', ...' if len(state) > 3 else ''}" if state
                else "it holds no tensors")
        raise UserError(f"{source} holds no Swin weights ({held}): give an official, timm or train.py checkpoint "
                        f"of a Swin model")


def check_same_architecture(state: dict, model: nn.Module, source="the state dict given") -> None:
    """A checkpoint of another variant is one clear error, not a wall of size mismatches."""
    want, have = describe_architecture(model.state_dict()), describe_architecture(state)
    if "depths" not in want:  # not model.py's network: its names are not a Swin's
        raise UserError(f"load_weights takes a Swin that model.py builds (create_model), not a {type(model).__name__}")
    differ = [k for k in ("version", "embed_dim", "depths", "num_heads") if k in have and have[k] != want[k]]
    if not differ:
        return
    fields = ", ".join(f"{k}={have[k]} (model: {want[k]})" for k in differ)
    candidates = matching_variants(have)
    hint = (f" Build the model as one of (--model in train.py and predict.py): {', '.join(candidates)}."
            if candidates else "")
    raise UserError(f"{source} holds weights for {_architecture_name(have)}, but the model is "
                    f"{getattr(model, 'variant', None) or _architecture_name(want)}: {fields}.{hint}")


def resize_position_bias_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a V1 ((2M-1)^2, heads) table to (size^2, heads), as the official loader does."""
    old = int(table.shape[0] ** 0.5)
    grid = table.T.reshape(1, -1, old, old)
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False).reshape(-1, size * size).T


def small_map_windows(model: nn.Module) -> dict:
    """{stage: side} for the V1 stages whose feature map at the model's image size is smaller than its window
    (the last, at an image size under the variant's). The official code gives such a stage a window of the map's
    side and a table of position biases for it, which its loader resizes a checkpoint's table to; this model keeps
    the window's table at every stage (any input size runs) and uses its centre there."""
    if getattr(model, "version", None) != 1 or not getattr(model, "img_size", None):
        return {}
    return {i: side for i, (stage, side) in enumerate(zip(model.layers, model.map_sides())) if side < stage.window_size}


def fitted_position_bias_table(table: torch.Tensor, size: int, used: int | None) -> torch.Tensor:
    """A checkpoint's V1 table made the model's, (size^2, heads), as the official loader makes it: resized
    (bicubic) where the window differs; for a stage that uses only a used x used window (small_map_windows),
    the centre it reads resized from the checkpoint's on its own, to (2 * used - 1)^2, as the official code
    builds that stage's table."""
    fitted = table if table.shape[0] == size * size else resize_position_bias_table(table, size)
    if used is None:
        return fitted
    span, heads = 2 * used - 1, table.shape[1]
    start = (size - span) // 2
    grid = fitted.T.reshape(heads, size, size).clone()
    grid[:, start:start + span, start:start + span] = resize_position_bias_table(table, span).T.reshape(
        heads, span, span)
    return grid.reshape(heads, size * size).T


def learned_offset_windows(obj, state: dict) -> tuple | None:
    """The windows on whose scale a V2 file's position-bias MLP learned its offsets (SwinTransformer.offset_windows):
    read off the coordinate tables that the official code keeps in its files, or rebuilt from a train.py checkpoint's
    settings; None where a file does not say (timm's and bare state dicts keep no tables)."""
    if is_run_checkpoint(obj):
        with torch.device("meta"):
            return create_model_from_checkpoint(obj).offset_windows()
    windows = []
    while f"layers.{len(windows)}.blocks.0.attn.relative_coords_table" in state:
        table = state[f"layers.{len(windows)}.blocks.0.attn.relative_coords_table"].float()  # (1, 2W-1, 2W-1, 2)
        if table.is_meta:  # a state dict of shapes only (a model built on the meta device): no values to read
            return None
        side = (table.shape[1] + 1) // 2
        if side < 2 or table.shape[1] != table.shape[2]:  # not square: not the official code's, the variant's stay
            return None
        # its largest offset, side - 1, was scaled to 8 * (side - 1) / (window - 1), then log-spaced
        window = round(8 * (side - 1) / (2 ** (3 * float(table[..., 0].max())) - 1) + 1)
        if not torch.allclose(log_spaced_coords((side, side), (window, window)).view(table.shape), table, atol=1e-4):
            return None  # a table not made as the official code makes it: the variant's windows stay
        windows.append(window)
    return tuple(windows) or None


def inner_model(model: nn.Module) -> nn.Module:
    """The model inside torch.compile's and (Distributed)DataParallel's wrappers, whose state dicts prefix its names
    (_orig_mod., module.): load_weights fills the model they share."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def head_rows_by_name(state: dict, trained_on: list, class_names: list) -> str:
    """The classifier of `state` (trained on `trained_on`) given a row per class of `class_names`, in place: a class's
    trained row where it was trained, zero where not. Returns the load report's note saying so."""
    rows = {letters(name): i for i, name in enumerate(trained_on)}
    weight, bias = state["head.weight"], state["head.bias"]
    state["head.weight"] = torch.zeros(len(class_names), *weight.shape[1:], dtype=weight.dtype)
    state["head.bias"] = torch.zeros(len(class_names), dtype=bias.dtype)
    for i, name in enumerate(class_names):
        if (row := rows.get(letters(name))) is not None:
            state["head.weight"][i], state["head.bias"][i] = weight[row], bias[row]
    kept = sum(letters(name) in rows for name in class_names)
    return "classifier rows put in place by class name: " + (
        "the same classes in another order" if kept == len(class_names) == len(rows) else
        f"{kept} of these {len(class_names)} classes were trained in it" +
        (", the others start at zero" if kept < len(class_names) else ""))


def load_weights(model: nn.Module, weights, verbose: bool = True, class_names: list | None = None,
                 source=None) -> dict:
    """Load official Microsoft, timm or this project's weights into model.

    weights: a path (.pth, .pt, .bin, .safetensors) or a state dict. V1 position-bias tables
    are resized when the window differs, and official or timm ones (from_the_official_code) fitted as the
    official loader fits them to a stage whose map is smaller than its window (fitted_position_bias_table); the
    classifier is dropped when the class count differs (the new one starts at zero); a V2 file's offset scale and
    the tutorial's shift (its own files, and runs trained from them) are taken from the file. Returns {'missing',
    'unexpected', 'resized', 'skipped', 'notes'} lists, and prints a short report of them when verbose (and the
    file's name). `class_names`, the classes the model is for: a train.py checkpoint of other classes (a class
    folder added, removed or renamed since) has its classifier's rows put at their classes' new places, by name, and
    a class it was not trained on starts at zero; kept where they were, each label would start as another class's.
    `source`: the file a state dict given was read from, named in the messages.
    """
    model = inner_model(model)
    file = source or (None if isinstance(weights, dict) else weights)  # where the weights were read, if known
    source = file or "the state dict given"
    loaded = weights if isinstance(weights, dict) else load_checkpoint(weights)
    unwrapped = unwrap_state_dict(loaded, source)
    state = to_official_layout(unwrapped)
    realigned = None
    if class_names is not None and is_run_checkpoint(loaded) and not same_names(loaded["class_names"], class_names) \
            and "head.weight" in state and "head.bias" in state:
        realigned = head_rows_by_name(state, loaded["class_names"], class_names)
    check_is_swin(state, source)
    check_same_architecture(state, model, source)
    own = model.state_dict()
    small = small_map_windows(model) if from_the_official_code(unwrapped) else {}
    resized, skipped, replaced = [], [], set()
    for key, value in list(state.items()):
        if key.endswith("relative_position_bias_table") and key in own:
            if math.isqrt(value.shape[0]) ** 2 != value.shape[0]:  # timm's, built at a non-square img_size
                raise UserError(f"{source}: {key} holds {value.shape[0]} position biases, the table of a window that "
                                "is not square (timm's model built at a non-square img_size, where a stage's map is "
                                "narrower than its window on one side): this model's windows are square; give "
                                "weights of a model built at a square image size")
            used = small.get(int(key.split(".")[1]))
            if value.shape != own[key].shape or used is not None:
                state[key] = fitted_position_bias_table(value, int(own[key].shape[0] ** 0.5), used)
                resized.append(f"{key} {tuple(value.shape)} -> {tuple(own[key].shape)}" +
                               (f" (its centre for a {used} x {used} window)" if used is not None else ""))
            continue
        if key not in own or value.shape == own[key].shape:
            continue
        if key.startswith("head."):
            del state[key]
            replaced.add(key)
            skipped.append(f"{key} {tuple(value.shape)} (model has {tuple(own[key].shape)}: new classifier)")
        else:
            raise UserError(f"cannot load {key}: checkpoint shape {tuple(value.shape)}, model {tuple(own[key].shape)}")
    lacking = [key for key in own if key not in state and not key.startswith("head.") and key != WINDOW_SETTINGS]
    if lacking:  # a part of a Swin (a backbone's stages) fits some keys: not a model that loads those alone
        raise UserError(f"{source}: {len(lacking)} of the model's {len(own)} tensors are not there "
                        f"({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}): give an official, timm "
                        f"(swin_transformer, swin_transformer_v2) or train.py checkpoint of "
                        f"{getattr(model, 'variant', 'this model')}")
    v2 = getattr(model, "version", None) == 2
    offsets, shifted = model.offset_windows() if v2 else None, model.layers[0].tutorial_shift  # as the model was
    result = model.load_state_dict(state, strict=False)  # a state dict of this project's sets its WINDOW_SETTINGS too
    learned = learned_offset_windows(loaded, unwrapped) if v2 else None
    if v2 and learned is None and model.offset_windows() != offsets:  # the file's WINDOW_SETTINGS
        learned = model.offset_windows()
    if learned is not None and len(learned) == len(model.layers) and learned != offsets:
        # as the official fine-tuning configs set PRETRAINED_WINDOW_SIZES: the MLP fed offsets on the scale it learned
        resized.append(f"position-bias offsets on the scale of the file's windows {learned}, not "
                       f"{getattr(model, 'variant', 'the model')}'s {offsets}")
        model.set_pretrained_window_sizes(learned)
    notes = [realigned] if realigned else []
    # the tutorial's own file, a run's checkpoint trained from one, or a state dict saved from a model that loaded
    # either (its WINDOW_SETTINGS): as that code ran, its weights trained so
    tutorials = from_the_tutorials_code(unwrapped) or is_run_checkpoint(loaded) and \
        loaded.get("model_overrides", {}).get("tutorial_shift") or model.layers[0].tutorial_shift
    if getattr(model, "version", None) == 1 and tutorials and not shifted:
        model.set_tutorial_shift()
        if model.shifted_by_the_tutorial():
            notes.append("windows shifted as the tutorial's code shifts them, in a stage whose map is as large as "
                         "its window (the official code does not): its weights were trained so")
    if replaced:  # the official loader (utils.load_pretrained) starts a classifier of another class count at zero
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.zero_()
    headless = isinstance(model.head, nn.Identity)
    unexpected = [k for k in result.unexpected_keys if not (k.startswith("head.") and headless)]
    skipped += [f"{k} (model has no classifier)" for k in result.unexpected_keys if k not in unexpected]
    # the new classifier's keys are said once, as skipped: missing is for what the file lacks
    missing = [k for k in result.missing_keys if k not in replaced]
    report = {"missing": missing, "unexpected": unexpected, "resized": resized, "skipped": skipped, "notes": notes}
    if verbose:  # said once loaded: a file that fails says only why
        print((f"weights from {file}: " if file else "") + format_load_report(report, len(state) -
                                                                                len(result.unexpected_keys)))
    return report


def format_load_report(report: dict, num_loaded: int) -> str:
    lines = [f"loaded {num_loaded} tensors"]
    for kind in ("resized", "skipped", "missing", "unexpected", "notes"):
        if report.get(kind):
            shown = report[kind][:6] + ([f"... {len(report[kind]) - 6} more"] if len(report[kind]) > 6 else [])
            lines.append(f"  {kind} ({len(report[kind])}): " + "; ".join(shown))
    return "\n".join(lines)


def describe_for_checkpoint(model: nn.Module, class_names: list, preprocessing: dict) -> dict:
    """What a train.py checkpoint holds beside the weights, so that it rebuilds its network
    (create_model_from_checkpoint) and predict.py preprocesses and names as the run did: `preprocessing` is how its run
    validates, crop_mode, crop_pct and interpolation (run_preprocessing)."""
    return {"variant": model.variant, "model_overrides": plain(model.overrides), "img_size": model.img_size,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **preprocessing, "class_names": list(class_names)}


def run_preprocessing(cfg, checkpoint: dict | None, img_size: int) -> dict:
    """How a training run validates and records it (build_transform's keywords): its recipe's at its image size
    (data.recipe_preprocessing), or that of the checkpoint it resumes, whose best epoch was chosen by figures of it."""
    if checkpoint is None:
        return recipe_preprocessing(cfg.recipe, img_size)
    return evaluation_preprocessing(checkpoint, img_size)


def evaluation_preprocessing(weights: dict | None, img_size: int) -> dict:
    """How photos are cropped and resized (crop_mode, crop_pct, interpolation: build_transform's keywords) to evaluate
    or classify with `weights` (as loaded; None for the official file model_for_run found by the variant's name) at
    `img_size`, as where they come from evaluates them:
    - a train.py checkpoint: its record (describe_for_checkpoint); a key missing from one written before it was
      recorded, as its run validated and predict.py classified then: center-cropped, bilinear;
    - an official file: as the official evaluation, bicubic, center-cropped 87.5%, and from 384 px the whole photo
      squashed to a square (its 384 px configs' TEST.CROP False: data.recipe_preprocessing of the official recipe);
    - a timm file: bicubic, center-cropped 87.5% (the official evaluation's; timm's configs of the 224 and 256 px
      weights say 0.9), and from 384 px as timm's configs of those: the central square of the whole shorter side
      (crop_pct 1.0, center);
    - other state dicts (the tutorial's, and this project's model's own, which do not say their recipe): the
      tutorial's, center-cropped 87.5%, bilinear, as its predict.py does."""
    if weights is None:
        return recipe_preprocessing("official", img_size)
    if is_run_checkpoint(weights):
        return {"crop_mode": weights.get("crop_mode", "center"), "crop_pct": weights["crop_pct"],
                "interpolation": weights.get("interpolation", "bilinear")}
    state = unwrap_state_dict(weights)
    if not from_the_official_code(state):
        return recipe_preprocessing("tutorial", img_size)
    official = recipe_preprocessing("official", img_size)
    return official | {"crop_mode": "center"} if is_timm_layout(state) else official


def create_model_from_checkpoint(checkpoint: dict, **overrides) -> nn.Module:
    """The network a train.py checkpoint holds (its variant and overrides), before its weights are
    loaded. V2 checkpoints that predate the variants' pretrained windows (they hold none) normalised
    each stage's position-bias offsets by its own window, which (0, 0, 0, 0) keeps; those that predate the
    drop path rates of the official configs keep the rate they trained with."""
    earlier = {"drop_path_rate": DROP_PATH_BEFORE[checkpoint["variant"]]} \
        if checkpoint["variant"] in DROP_PATH_BEFORE else {}
    return create_model(checkpoint["variant"], **{"pretrained_window_sizes": (0, 0, 0, 0), **earlier,
                                                  **checkpoint.get("model_overrides", {}), **overrides})


def model_from_state_dict(ckpt, path, variant: str, overrides: dict) -> nn.Module:
    """A classifier from weights that do not say what they are (the tutorial's weights/model-9.pth,
    official or timm files, given to predict.py with --model): `variant` with the file's class count."""
    unwrapped = unwrap_state_dict(ckpt, path)
    state = to_official_layout(unwrapped)
    check_is_swin(state, path)
    if variant is None:
        like = matching_variants(describe_architecture(state))[:3]
        raise UserError(f"{path} is not a checkpoint of train.py, so it does not say which model it is: "
                        f"add --model NAME ({' or '.join(like) or 'see model.py'}) and --num-classes N")
    if "head.weight" not in state:
        raise UserError(f"{path} holds no classifier (head.weight): it cannot name classes")
    model = create_model(variant, num_classes=state["head.weight"].shape[0], **overrides)
    check_same_architecture(state, model, path)  # another variant's file: named, with --model
    report = load_weights(model, unwrapped, verbose=False)
    if report["missing"] or report["unexpected"]:
        raise UserError(f"{path} does not fit {model.variant}: missing {report['missing'][:3]}, "
                        f"unexpected {report['unexpected'][:3]}")
    if report["resized"]:  # another window (another --model of the same size) or image size: not silently
        adapted = report["resized"]
        more = f", and {len(adapted) - 1} more" if len(adapted) > 1 else ""
        print(f"notice: {path} was made for another window or image size than {model.variant} at "
              f"{model.img_size} px: its position biases were adapted ({adapted[0]}{more}); "
              f"the --model it was made as classifies as it was trained", file=sys.stderr)
    return model


def model_for_run(cfg, num_classes: int, checkpoint, main_process: bool, class_names: list | None = None,
                  read: dict | None = None) -> nn.Module:
    """train.py's model: the variant with the run's overrides (cfg: train.py's settings), and its starting
    weights: a resumed checkpoint, --weights, weights/<variant>.pth, or none (from scratch); `class_names`, the
    data's, put a run's classifier rows in place by name (load_weights). `read`: --weights' file as the caller has
    read it (--eval-only, for evaluation_preprocessing), not read again."""
    if checkpoint is not None:
        # drop path changes no weight: the run's own rate, or one typed on resuming (its config.yaml records it)
        rate = {} if cfg.drop_path_rate is None else {"drop_path_rate": cfg.drop_path_rate}
        model = create_model_from_checkpoint(checkpoint, grad_checkpointing=cfg.grad_checkpointing, **rate)
        model.load_state_dict(checkpoint["model"])
        return freeze_all_but_the_head(model) if cfg.freeze_layers else model
    variant = resolve_variant(cfg.model)
    overrides = {k: getattr(cfg, k) for k in ("img_size", "drop_path_rate", "window_size")
                 if getattr(cfg, k) is not None}
    model = create_model(variant, num_classes=num_classes, grad_checkpointing=cfg.grad_checkpointing, **overrides)
    weights = cfg.weights or official_weights_file(variant)
    tutorial_place = tutorial_weights_file(variant)
    official = names_official_file(cfg.weights, variant)
    if official and not weights.is_file() and tutorial_place.is_file():
        if main_process:
            print(f"using {tutorial_place}, where the tutorial keeps it (weights/README.md: {weights})")
        weights = tutorial_place
    elif official and not weights.is_file() and official_weights_file(variant).is_file():
        weights = official_weights_file(variant)  # the tutorial's --weights ./<variant>.pth, fetched into weights/
    if is_program(weights) and Path(weights).exists():  # a mistyped one is not found, as a checkpoint is
        raise UserError(f"{weights} is a program that predict.py --export wrote: predict.py runs it and train.py "
                        "--eval-only evaluates it, but its weights do not train; start from the checkpoint it was "
                        "exported from")
    from_scratch = cfg.weights == "none" or (cfg.weights is None and not weights.is_file())
    if cfg.weights == "none":
        if main_process:
            print(f"training {variant} from scratch (--weights none)")
    elif not from_scratch:
        if not weights.is_file() and official and variant in OFFICIAL_WEIGHTS:
            raise UserError(f"weights not found: {weights}. --download-weights fetches them (weights/README.md "
                            "says from where)")
        report = load_weights(model, weights if read is None else read, main_process, class_names, source=weights)
        untrained = [key for key in report["missing"] + report["skipped"] if key.startswith("head.")]
        if cfg.eval_only and untrained:  # its score would be a random classifier's
            raise UserError(f"--eval-only: {weights} holds no classifier of these {num_classes} classes "
                            f"({untrained[0]}), so it would be evaluated with a random one. Evaluate a checkpoint "
                            "trained on them (--resume runs/<name>/best.pth)")
    elif main_process:
        hint = "--download-weights fetches the official ones" if variant in OFFICIAL_WEIGHTS else "none exist"
        print(f"notice: no pretrained weights (no --weights, no {weights}): training {variant} from scratch; "
              f"{hint} (weights/README.md)")
    if main_process and cfg.freeze_layers and from_scratch:
        print("notice: --freeze-layers with no pretrained weights trains a classifier on random features")
    return freeze_all_but_the_head(model) if cfg.freeze_layers else model


def freeze_all_but_the_head(model):
    """--freeze-layers: only the classifier trains (and gets optimizer state, which a resume must match)."""
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("head.")
    return model


# --- What predict.py classifies with ---

@dataclass
class Classifier:
    """A model, or a program that predict.py --export wrote, with its class names and preprocessing."""
    model: nn.Module
    class_names: list
    mean: tuple
    std: tuple
    # how a photo is cropped and resized for it (evaluation_preprocessing): its central crop_pct (of the shorter side,
    # "center", or of each side, "squash"), resized "bilinear" or "bicubic"
    crop_pct: float
    crop_mode: str
    interpolation: str
    source: Path
    val_ratio: float | None = None  # the training run's --val-ratio, which an export carries for --eval-only


def load_classifier(weights: Path | None, variant: str | None = None, num_classes: int | None = None,
                    class_indices: Path | None = None, img_size: int | None = None) -> Classifier:
    """predict.py's classifier (its flags --weights, --model, --num-classes, --class-indices, --img-size): a
    train.py checkpoint or run folder (default: the newest run's best.pth), an .onnx or .pt2 that --export
    wrote, or a plain state dict of `variant`; the flags given are checked against what the file holds."""
    path = weights or newest_run_checkpoint()
    path = checkpoint_of_run(path) if path.is_dir() else path
    ckpt = None if is_program(path) else load_checkpoint(path)
    size = {"img_size": img_size} if img_size else {}
    if ckpt is None:  # what --export wrote: the program carries its names and preprocessing, as a checkpoint does
        model = load_program(path)
        if img_size and img_size != model.img_size:
            raise UserError(f"--img-size {img_size} was given, but {path} was exported for "
                            f"{model.img_size} px; drop --img-size (the program resizes any image itself)")
        names, mean, std, val_ratio = model.class_names, model.mean, model.std, model.val_ratio
        preprocessing = preprocessing_of(model)
    elif is_run_checkpoint(ckpt):  # train.py's: it describes itself
        model = create_model_from_checkpoint(ckpt, **size)
        model.load_state_dict(ckpt["model"])
        names, mean, std = ckpt["class_names"], ckpt["mean"], ckpt["std"]
        preprocessing = evaluation_preprocessing(ckpt, model.img_size)
        val_ratio = (ckpt.get("config") or {}).get("val_ratio")
    else:
        model = model_from_state_dict(ckpt, path, variant, size)
        names, mean, std, val_ratio = None, IMAGENET_MEAN, IMAGENET_STD, None
        preprocessing = evaluation_preprocessing(ckpt, model.img_size)  # at the size it classifies at
    if variant and resolve_variant(variant) != model.variant:
        raise UserError(f"--model {variant} was given, but {path} holds a {model.variant}; drop --model")
    if num_classes is not None and num_classes != model.num_classes:
        raise UserError(f"--num-classes {num_classes} was given, but the classifier in {path} has "
                        f"{model.num_classes} outputs: it was trained for {model.num_classes} classes")
    if class_indices is not None:
        carried, names = names, read_class_indices(class_indices)
        if len(names) != model.num_classes:
            raise UserError(f"{class_indices} names {len(names)} classes, but the classifier in {path} "
                            f"has {model.num_classes} outputs; use the class_indices.json of its training run")
        if carried and not same_names(names, carried) and sorted(map(letters, names)) == sorted(map(letters, carried)):
            raise UserError(f"{class_indices} names the classes of {path} in another order ({', '.join(names)}; "
                            f"its own: {', '.join(carried)}), so every output would get another class's name: drop "
                            "--class-indices (the file carries its names) or give its run's class_indices.json")
        own = {letters(name): i for i, name in enumerate(carried or ())}
        moved = [f"{name} at {i}, its at {own[letters(name)]}" for i, name in enumerate(names)
                 if own.get(letters(name), i) != i]  # another run's file: classes it shares, at other outputs
        if moved:
            raise UserError(f"{class_indices} numbers classes of {path} otherwise ({'; '.join(moved)}), so outputs "
                            "would get another class's name: drop --class-indices (the file carries its names) or "
                            "give its run's class_indices.json")
    tutorial_names = Path("class_indices.json")  # the tutorial's predict.py reads ./class_indices.json
    if names is None and class_indices is None and tutorial_names.is_file():
        names = read_class_indices(tutorial_names)
        if len(names) == model.num_classes:
            print(f"class names from {tutorial_names}", file=sys.stderr)
        else:  # another model's (official ImageNet weights beside the tutorial's 5 classes): not this one's
            print(f"notice: {tutorial_names} here names {len(names)} classes and {path} has {model.num_classes} "
                  "outputs: not its names, so classes are shown by their index (--class-indices FILE, the "
                  "class_indices.json of its training, names them)", file=sys.stderr)
            names = [str(i) for i in range(model.num_classes)]
    if names is None:  # the tutorial's state dict without its class_indices.json: outputs by number, said why
        names = [str(i) for i in range(model.num_classes)]
        print(f"notice: {path} carries no class names and there is no {tutorial_names} here: classes are shown by "
              "their index (--class-indices FILE, the class_indices.json of its training, names them)",
              file=sys.stderr)
    return Classifier(model, names, tuple(mean), tuple(std), **preprocessing, source=path, val_ratio=val_ratio)


