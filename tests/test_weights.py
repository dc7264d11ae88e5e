"""weights.py: official, timm and our own checkpoints load (wrapped, resized, with another head), and
wrong files are clear errors. Outputs equal to timm's for official checkpoints: test_model.py."""
import argparse
import re

import pytest
import torch

import weights
from model import create_model
from utils import UserError
from weights import load_weights, model_from_state_dict


def micro_state(**kw):
    torch.manual_seed(0)
    return create_model("swin_micro_patch4_window4_128", **kw).state_dict()


def test_position_bias_table_resized_for_another_window():
    net = create_model("swin_micro_patch4_window4_128", window_size=6)
    report = load_weights(net, micro_state(), verbose=False)
    assert len(report["resized"]) == 5 and report["missing"] == []
    table = net.layers[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (11 * 11, 1)
    # resizing to the size it already has gives the table back
    same = weights.resize_position_bias_table(micro_state()["layers.0.blocks.0.attn.relative_position_bias_table"], 7)
    assert torch.allclose(same, micro_state()["layers.0.blocks.0.attn.relative_position_bias_table"], atol=1e-6)
    # and to another, the table timm's loader makes of it (bicubic, as the official loader): 13 x 13 to 23 x 23
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_simple
    table = torch.randn(13 * 13, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(weights.resize_position_bias_table(table, 23),
                               resize_rel_pos_bias_table_simple(table, (12, 12), (23 * 23, 3)))


def test_this_projects_weights_load_as_they_are_where_a_stage_reads_its_tables_centre():
    """At 64 px the micro variant's last map is 2 x 2, under its window of 4: the official code's and timm's weights
    are fitted there as their loaders fit them (test_model.py), this project's own (no index buffers, the official
    layout), trained as the model reads them, load as they are."""
    state = micro_state()
    net = create_model("swin_micro_patch4_window4_128", img_size=64)
    assert load_weights(net, dict(state), verbose=False)["resized"] == []
    assert all(torch.equal(value, state[key]) for key, value in net.state_dict().items())
    official = {**state, "layers.3.blocks.0.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long),
                "layers.0.blocks.1.attn_mask": torch.zeros(16, 16, 16)}  # the official code keeps its shift masks
    assert len(load_weights(net, official, verbose=False)["resized"]) == 1
    fitted = net.layers[3].blocks[0].attn.relative_position_bias_table.detach().clone()
    from_predict = model_from_state_dict({"model": official}, "official.pth", "swin_micro_patch4_window4_128",
                                         {"img_size": 64})  # predict.py --weights official.pth --model ...
    assert torch.equal(from_predict.layers[3].blocks[0].attn.relative_position_bias_table, fitted)


def test_the_maps_whose_side_is_under_the_window_are_found_as_the_model_pads_and_merges():
    """Sides round up (the patch embedding pads, merging pads an odd side): at 208 px swin_tiny's last map is 7 x 7,
    its window's size, not 6 x 6."""
    with torch.device("meta"):
        sides = {size: weights.small_map_windows(create_model("swin_tiny_patch4_window7_224", img_size=size))
                 for size in (224, 208, 192, 176)}
    assert sides == {224: {}, 208: {}, 192: {3: 6}, 176: {3: 6}}


def test_classifier_dropped_when_class_count_differs(capsys):
    state = micro_state(num_classes=1000)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5)
    report = load_weights(net, state)
    assert [k.split()[0] for k in report["skipped"]] == ["head.weight", "head.bias"]
    assert report["missing"] == []  # the new classifier is said once, as skipped, not as missing too
    assert torch.equal(net.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    out = capsys.readouterr().out
    assert "skipped (2)" in out and "missing" not in out


def test_own_checkpoint_with_wrappers(tmp_path):
    state = {"module." + k: v for k, v in micro_state(num_classes=5).items()}  # saved from DDP
    path = tmp_path / "best.pth"
    torch.save({"model": state, "epoch": 3, "variant": "swin_micro_patch4_window4_128"}, path)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5)
    report = load_weights(net, path, verbose=False)
    assert report == {"missing": [], "unexpected": [], "resized": [], "skipped": [], "notes": []}


def test_a_model_inside_torch_compile_or_data_parallel_is_the_one_loaded():
    """A compiled model's state dict names its tensors _orig_mod.*, DataParallel's module.*: a KeyError traceback."""
    state = micro_state(num_classes=3)
    for wrap in (torch.compile, torch.nn.DataParallel):
        net = create_model("swin_micro_patch4_window4_128", num_classes=3)
        assert load_weights(wrap(net), dict(state), verbose=False)["missing"] == []
        assert all(torch.equal(value, state[key]) for key, value in net.state_dict().items())
    with pytest.raises(UserError, match="takes a Swin that model.py builds"):
        load_weights(torch.nn.Sequential(create_model("swin_micro_patch4_window4_128")), dict(state), verbose=False)


def test_safetensors_file(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "model.safetensors"
    safetensors.save_file(micro_state(), str(path))
    report = load_weights(create_model("swin_micro_patch4_window4_128"), path, verbose=False)
    assert report["missing"] == []


class Config:  # stands for the yacs config object some training scripts pickle into checkpoints
    pass


def test_pickled_objects_refused(tmp_path):
    path = tmp_path / "ckpt_with_config.pth"
    torch.save({"model": micro_state(), "config": Config()}, path)
    with pytest.raises(UserError, match=r"pickled Python objects .*\['model'\]"):
        load_weights(create_model("swin_micro_patch4_window4_128"), path)
    # torch.save(model), the whole module: its state_dict() to save, not a key of a dict it is not
    whole = tmp_path / "whole_model.pth"
    torch.save(create_model("swin_micro_patch4_window4_128"), whole)
    with pytest.raises(UserError, match=r"a whole pickled model \(model\.SwinTransformer\).*\.state_dict\(\)"):
        load_weights(create_model("swin_micro_patch4_window4_128"), whole)
    # a state_dict (an OrderedDict at the top) with an object in it is no whole model: .state_dict() would fail on it
    ordered = tmp_path / "state_dict_with_config.pth"
    state = create_model("swin_micro_patch4_window4_128").state_dict()
    state["config"] = Config()
    torch.save(state, ordered)
    with pytest.raises(UserError, match=r"pickled Python objects besides tensors"):
        load_weights(create_model("swin_micro_patch4_window4_128"), ordered)
    # a text file whose first letter is c reads as pickle's GLOBAL opcode: not a checkpoint, not a pickle to trust
    text = tmp_path / "config.yaml"
    text.write_text("config: null\nmodel: swin_micro_patch4_window4_128\n")
    with pytest.raises(UserError, match="is not a PyTorch checkpoint"):
        load_weights(create_model("swin_micro_patch4_window4_128"), text)


def test_bad_files_are_clear_errors(tmp_path):
    net = create_model("swin_micro_patch4_window4_128")
    with pytest.raises(UserError, match="not found"):
        load_weights(net, tmp_path / "missing.pth")
    junk = tmp_path / "photo.pth"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not a checkpoint at all")
    with pytest.raises(UserError, match=r"photo.pth is not a PyTorch checkpoint \(torch.load could not read it: "
                                        r"\w+\): give a file that torch.save wrote \(train.py's checkpoints, official "
                                        r"or timm weights\) or a .safetensors file$"):
        load_weights(net, junk)
    cut = tmp_path / "cut.safetensors"  # a download cut short, or a text file with that suffix
    cut.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    with pytest.raises(UserError, match=r"cut\.safetensors is not a safetensors file of tensors \("):
        load_weights(net, cut)
    bare = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), bare)
    with pytest.raises(UserError, match=r"tensor\.pth holds a Tensor, not a state dict"):
        load_weights(net, bare)
    # weights under a key not looked for (another trainer's 'net', an EMA's): said where they are, not "no tensors"
    nested = tmp_path / "nested.pth"
    torch.save({"net": micro_state(), "epoch": 3}, nested)
    with pytest.raises(UserError, match=r"nested\.pth holds its tensors under 'net', not a key weights are looked "
                                        r"for under .*torch.save\(checkpoint\['net'\], 'weights.pth'\)"):
        load_weights(net, nested)
    # bytes changed inside a whole file (a disk's fault): its checksum says so, where torch.load loaded them as weights
    whole = tmp_path / "whole.pth"
    torch.save({"model": micro_state()}, whole)
    data = bytearray(whole.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 1000] = bytes(1000)
    whole.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"whole\.pth is cut short or damaged \(.* fails its checksum\)"):
        load_weights(net, whole)
    # a changed byte in a file's name (its header no longer decodes), or in the zip's directory: the same line
    torch.save({"model": micro_state()}, whole)
    data = bytearray(whole.read_bytes())
    data[30] = 0xFF  # the first letter of the first file's name
    whole.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"whole\.pth is cut short or damaged"):
        load_weights(net, whole)
    # saved without checksums (PyTorch's compute_crc32 = False writes 0 for each): loaded, not refused
    from torch.utils.serialization import config
    unchecked = tmp_path / "unchecked.pth"
    saved_with = config.save.compute_crc32
    config.save.compute_crc32 = False
    try:
        torch.save({"model": micro_state()}, unchecked)
    finally:
        config.save.compute_crc32 = saved_with
    assert load_weights(net, unchecked, verbose=False)["missing"] == []


def test_weights_that_fit_only_a_few_keys_are_refused_not_loaded_as_those(tmp_path):
    """A ViT's (patch_embed.proj too) is no Swin; a Swin of another naming (timm's swinv2_cr) fits a few of the
    model's keys: loading those alone would train, in effect, from scratch."""
    with pytest.raises(UserError, match=r"holds no Swin weights \(its tensors are named patch_embed\.proj"):
        load_weights(create_model("swin_micro_patch4_window4_128"),
                     {"patch_embed.proj.weight": torch.zeros(32, 3, 4, 4), "blocks.0.attn.qkv.weight": torch.zeros(1)})
    cr = {"patch_embed.proj.weight": torch.zeros(32, 3, 4, 4), "stages.0.blocks.0.attn.logit_scale": torch.zeros(1)}
    with pytest.raises(UserError, match=r"holds a Swin of another naming \(its blocks under stages\., as timm's "
                                        r"swinv2_cr_\* models"):
        load_weights(create_model("swin_micro_patch4_window4_128"), cr)
    other = {"patch_embed.proj.weight": torch.zeros(32, 3, 4, 4), "stages.0.blocks.0.attn.qkv.weight": torch.zeros(1)}
    with pytest.raises(UserError, match="holds no Swin weights"):  # timm's MViTv2, TinyViT: blocks under stages too
        load_weights(create_model("swin_micro_patch4_window4_128"), other)
    state = micro_state()
    partial = {k: v for k, v in state.items() if not k.startswith(("patch_embed.", "norm."))}  # a backbone's part
    with pytest.raises(UserError, match=rf"^the state dict given: 6 of the model's {len(state)} tensors are not there "
                                        r"\(patch_embed\.proj\.weight, patch_embed\.proj\.bias, "
                                        r"patch_embed\.norm\.weight, \.\.\.\): give an official, .* checkpoint of "
                                        r"swin_micro_patch4_window4_128$"):
        load_weights(create_model("swin_micro_patch4_window4_128"), partial)
    headless = {k: v for k, v in state.items() if not k.startswith("head.")}  # a backbone's: a new classifier
    assert load_weights(create_model("swin_micro_patch4_window4_128"), headless, verbose=False)["missing"] == [
        "head.weight", "head.bias"]


def test_swin_weights_under_a_prefix_are_named_not_called_no_swin_weights():
    """A Swin inside another module (a LightningModule's `self.model`, a detector's backbone) saves its weights
    under that prefix: the error names the prefix, where it said the file held no Swin weights."""
    state = {"state_dict": {"model." + k: v for k, v in micro_state().items()}, "epoch": 3}
    with pytest.raises(UserError, match=r"holds Swin weights under the prefix 'model\.'"):
        load_weights(create_model("swin_micro_patch4_window4_128"), state)


def test_weights_of_another_network_are_refused_not_loaded_as_nothing(tmp_path):
    """A file of some other network's tensors fits no key: an error, not a run trained from scratch
    (train.py --weights) nor a list of Swin variants to try (predict.py --weights)."""
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(5, 8)}, other)
    with pytest.raises(UserError, match=r"resnet\.pth holds no Swin weights \(its tensors are named conv1\.weight"):
        load_weights(create_model("swin_micro_patch4_window4_128"), other)
    for variant in (None, "swin_micro_patch4_window4_128"):
        with pytest.raises(UserError, match="holds no Swin weights"):
            model_from_state_dict(torch.load(other), other, variant, {})
    with pytest.raises(UserError, match=r"holds no Swin weights \(it holds no tensors\)"):
        model_from_state_dict({"epoch": 3}, "empty.pth", None, {})


def test_another_variant_is_named_not_a_size_mismatch():
    with torch.device("meta"):
        base = create_model("swin_base_patch4_window7_224")
    tiny = create_model("swin_tiny_patch4_window7_224").state_dict()
    with pytest.raises(UserError) as err:
        load_weights(base, tiny)
    message = str(err.value)
    assert "Swin tiny" in message and "swin_base_patch4_window7_224" in message
    assert "swin_tiny_patch4_window7_224" in message  # the variant to build instead
    v2 = micro_state(version=2)
    with pytest.raises(UserError, match="version=2"):
        load_weights(create_model("swin_micro_patch4_window4_128"), v2)


def test_another_variants_file_is_named_with_the_flag_that_picks_the_variant(tmp_path):
    path = tmp_path / "micro.pth"
    torch.save(micro_state(), path)
    with torch.device("meta"):
        tiny = create_model("swin_tiny_patch4_window7_224")
    with pytest.raises(UserError) as err:  # train.py --weights, predict.py --weights: which file, and --model
        load_weights(tiny, path)
    assert str(path) in str(err.value) and "--model" in str(err.value)
    assert "swin_micro_patch4_window4_128" in str(err.value)
    # predict.py --weights FILE --model NAME: the same line
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))} holds weights for Swin micro, .*--model"):
        model_from_state_dict(torch.load(path), path, "swin_tiny_patch4_window7_224", {})


def test_the_load_report_counts_only_what_was_loaded(capsys):
    """Into a model without a classifier (num_classes=0, a backbone), the checkpoint's head is skipped and
    said so, and not counted as loaded."""
    state = create_model("swin_micro_patch4_window4_128", num_classes=5).state_dict()
    load_weights(create_model("swin_micro_patch4_window4_128", num_classes=0), dict(state))
    said = capsys.readouterr().out
    assert said.startswith(f"loaded {len(state) - 2} tensors") and "skipped (2): head.weight" in said, said


def test_weights_made_for_another_window_are_said_by_predict(tmp_path, capsys):
    """A plain state dict of another window given with --model: its tables are resized to fit, and predict.py says
    so (it ran as another model without a word)."""
    other = micro_state(window_size=8)
    model = model_from_state_dict(other, tmp_path / "w8.pth", "swin_micro_patch4_window4_128", {})
    assert model.layers[0].window_size == 4
    err = capsys.readouterr().err
    assert err.startswith(f"notice: {tmp_path / 'w8.pth'} was made for another window or image size than "
                          "swin_micro_patch4_window4_128 at 128 px: ") and "its position biases were adapted (" in err
    model_from_state_dict(micro_state(), tmp_path / "w4.pth", "swin_micro_patch4_window4_128", {})
    assert capsys.readouterr().err == ""


def test_a_new_classifier_starts_at_zero_as_the_official_loader_starts_it():
    state = micro_state(num_classes=1000)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5)
    load_weights(net, state, verbose=False)
    assert not net.head.weight.any() and not net.head.bias.any()


def test_the_tutorials_own_weights_run_as_its_code_ran_them(tmp_path):
    """A state dict the tutorial's model.py saved (its index buffers, no shift masks: it builds those in each
    forward pass) was trained shifting a stage whose map is as large as its window, where the official code does
    not (micro at 64 px: a 4 x 4 map, window 4): the model shifts there too, says so, and a checkpoint keeps it;
    its strict load_state_dict, the tutorial's own, takes the file too."""
    state = micro_state()
    tutorials = {**state, **{f"layers.{i}.blocks.{j}.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long)
                             for i in range(4) for j in range(2)}}
    net = create_model("swin_micro_patch4_window4_128", img_size=64).eval()
    report = load_weights(net, dict(tutorials), verbose=False)
    assert report["notes"] == ["windows shifted as the tutorial's code shifts them, in a stage whose map is as large "
                               "as its window (the official code does not): its weights were trained so"]
    assert report["resized"] == []  # no other window (the table of a map under it read whole, as that code reads it)
    assert net.overrides["tutorial_shift"] is True and net.layers[2].tutorial_shift
    official = create_model("swin_micro_patch4_window4_128", img_size=64).eval()
    official.load_state_dict(tutorials)  # the tutorial's strict load: its buffers left out, not refused
    rebuilt = weights.create_model_from_checkpoint({"variant": net.variant, "model_overrides": net.overrides}).eval()
    rebuilt.load_state_dict(net.state_dict())
    # a run trained from it, given as --weights to the next: the shift carried on (its state dict keeps no buffers)
    successor = create_model("swin_micro_patch4_window4_128", img_size=64).eval()
    load_weights(successor, {"variant": net.variant, "model_overrides": net.overrides, "class_names": list("abcde"),
                             "model": net.state_dict()}, verbose=False)
    assert successor.layers[2].tutorial_shift
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net(x)) and (official(x) - net(x)).abs().max() > 1e-4
    # fine-tuned so and saved as the tutorial saves, its state_dict alone: the shift comes back with it (it was lost,
    # the file then read as the official rule's), by load_weights and the tutorial's strict load alike
    for load in (lambda model: load_weights(model, net.state_dict(), verbose=False),
                 lambda model: model.load_state_dict(net.state_dict())):
        again = create_model("swin_micro_patch4_window4_128", img_size=64).eval()
        load(again)
        with torch.no_grad():
            assert again.layers[2].tutorial_shift and torch.equal(again(x), net(x))


def test_timm_weights_of_a_non_square_image_size_are_a_clear_error_or_load():
    """timm clamps each side of a window to its stage's map: at a non-square img_size a V1 table of a non-square
    window (here 3 x 5 offsets, 15 rows), which reshaped as a square was a RuntimeError's traceback; V2 keeps no
    table in its files, but the official layout of one (with its buffers) held a non-square coordinate table."""
    import timm
    micro = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4, img_size=(64, 96))
    v1 = timm.create_model("swin_tiny_patch4_window7_224", num_classes=5, **micro).state_dict()
    with pytest.raises(UserError, match="15 position biases, the table of a window that is not square"):
        load_weights(create_model("swin_micro_patch4_window4_128", num_classes=5), v1, verbose=False)
    timm_v2 = timm.create_model("swinv2_tiny_window8_256", num_classes=5, **micro)
    v2 = {**dict(timm_v2.named_buffers()), **timm_v2.state_dict()}  # relative_coords_table (1, 3, 5, 2) at stage 4
    ours = create_model("swin_micro_patch4_window4_128", num_classes=5, version=2)
    assert load_weights(ours, v2, verbose=False)["missing"] == []


def test_weights_are_evaluated_as_where_they_come_from_evaluates_them():
    """evaluation_preprocessing: an official file of a 384 px model is squashed whole to the square, as the official
    configs of 384 px evaluate (TEST.CROP False); a timm file of one center-cropped whole (crop_pct 1.0), as timm's
    configs of those weights; at 224 or 256 px both center-crop 87.5%, bicubic. This project's own state dicts and the
    tutorial's as the tutorial evaluates (87.5%, bilinear); a train.py checkpoint as it records, and one from before
    the record as its run validated (center, bilinear)."""
    state = micro_state()
    official = {**state, "layers.0.blocks.0.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long),
                "layers.0.blocks.1.attn_mask": torch.zeros(16, 16, 16)}
    timm_layout = {key.replace("head.", "head.fc."): value for key, value in state.items()}
    tutorials = {**state, "layers.0.blocks.0.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long)}
    squash, center = {"crop_mode": "squash", "crop_pct": 1.0}, {"crop_mode": "center", "crop_pct": 0.875}
    expected = {  # (weights, img_size): preprocessing
        ("official", 384): {**squash, "interpolation": "bicubic"},
        ("official", 224): {**center, "interpolation": "bicubic"},
        ("timm", 384): {"crop_mode": "center", "crop_pct": 1.0, "interpolation": "bicubic"},
        ("timm", 256): {**center, "interpolation": "bicubic"},
        ("own", 384): {**center, "interpolation": "bilinear"},
        ("tutorial's", 384): {**center, "interpolation": "bilinear"}}
    files = {"official": {"model": official}, "timm": timm_layout, "own": state, "tutorial's": tutorials}
    for (name, size), want in expected.items():
        assert weights.evaluation_preprocessing(files[name], size) == want, (name, size)
    assert weights.evaluation_preprocessing(None, 384) == {**squash, "interpolation": "bicubic"}  # found by its name
    run = {"variant": "swin_micro_patch4_window4_128", "class_names": list("abcde"), "model": state, "crop_pct": 0.875}
    recorded = {**squash, "interpolation": "bicubic"}
    assert weights.evaluation_preprocessing({**run, **recorded}, 64) == recorded
    assert weights.evaluation_preprocessing(run, 384) == {**center, "interpolation": "bilinear"}  # before the record
    # a run: its recipe's at its size, or, resumed, its checkpoint's (chosen by figures of it)
    official_recipe = argparse.Namespace(recipe="official")
    assert weights.run_preprocessing(official_recipe, None, 384) == recorded
    assert weights.run_preprocessing(official_recipe, None, 224) == {**center, "interpolation": "bicubic"}
    assert weights.run_preprocessing(official_recipe, run, 384) == {**center, "interpolation": "bilinear"}


def test_nested_wrapper_prefixes_are_all_stripped():
    """DDP around a torch.compile'd model saves module._orig_mod.*: both prefixes go, and the file loads."""
    state = micro_state(num_classes=3)
    nested = {"module._orig_mod." + k: v for k, v in state.items()}
    assert set(weights.unwrap_state_dict({"model": nested})) == set(state)
    net = create_model("swin_micro_patch4_window4_128", num_classes=3)
    report = weights.load_weights(net, {"model": nested}, verbose=False)
    assert report["missing"] == [] and report["unexpected"] == []


def test_a_file_with_a_variant_but_no_class_names_is_classified_as_a_state_dict(tmp_path, monkeypatch):
    """{'model': ..., 'variant': ...} (another trainer's, or a hand-trimmed checkpoint) is not train.py's: predict.py
    takes it with --model as plain weights, classes by index, not a KeyError on 'class_names'."""
    monkeypatch.chdir(tmp_path)  # no class_indices.json here
    path = tmp_path / "trimmed.pth"
    torch.save({"model": micro_state(num_classes=3), "variant": "swin_micro_patch4_window4_128"}, path)
    classifier = weights.load_classifier(path, variant="swin_micro_patch4_window4_128")
    assert classifier.class_names == ["0", "1", "2"] and classifier.model.num_classes == 3


def test_a_plain_file_whose_classifier_lacks_its_bias_is_refused_not_run_with_a_zero_bias(tmp_path):
    """predict.py --weights FILE --model NAME: a file with head.weight but no head.bias does not fit; it was run with
    the new model's bias (zeros) in its place, without a word."""
    state = micro_state(num_classes=3)
    del state["head.bias"]
    with pytest.raises(UserError, match=r"does not fit swin_micro_patch4_window4_128: missing \['head.bias'\]"):
        weights.model_from_state_dict(state, tmp_path / "w.pth", "swin_micro_patch4_window4_128", {})
