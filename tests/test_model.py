"""model.py: faithful to the official models (timm follows the official code), any input size, gradients,
stochastic depth, activation checkpointing, class activation maps, the compiled and eager training passes' gathers,
a stage as a layer. The window machinery: test_windows.py; the variants' names and settings: test_variants.py;
attention kinds: test_attention.py; mixed precision: test_precision.py."""
import re

import pytest
import timm
import torch
import torch.nn.functional as F

import kernels
import model
from model import create_model
from test_precision import traffic
from utils import UserError
from weights import create_model_from_checkpoint, load_weights

# Every variant with official weights, and timm's name for the same network.
TIMM_NAME = {
    name: (name.replace("_patch4", "") if name.startswith("swinv2_") else name).replace("_in22k", "")
    for name in model.VARIANTS if name not in model.NO_PRETRAINED_WEIGHTS
}


def perturbed_timm(timm_name: str, num_classes: int, seed: int = 0, **kwargs):
    """A timm model with every parameter moved off its init (V2 starts its post-norms at zero,
    which would make whole blocks vanish from a comparison)."""
    torch.manual_seed(seed)
    reference = timm.create_model(timm_name, num_classes=num_classes, **kwargs).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return reference


def official_layout(reference) -> dict:
    """timm's weights as an official Microsoft checkpoint: patch merging at the end of each stage,
    head.*, the buffers the official code stores, all under {'model': ...}."""
    state = {name: t for name, t in reference.named_buffers()}  # relative_position_index, attn_mask, ...
    state.update(reference.state_dict())
    official = {}
    for key, value in state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
        official[key.replace("head.fc.", "head.")] = value
    return {"model": official}


def checked_through(name: str):
    """(the variant whose logits check this one's code, the settings in which they differ), or (None, None).
    A large variant is its base one made wider; an in22k one is its 1k one with a 21841-class head. Their
    own logits would add some 50 s of CPU and nothing the other's do not check."""
    if "_large_" in name:
        return name.replace("_large_", "_base_"), {"embed_dim", "num_heads", "drop_path_rate"}
    if name.endswith("_in22k"):
        return name[:-len("_in22k")], {"num_classes", "drop_path_rate"}
    return None, None


DERIVED = sorted(name for name in TIMM_NAME if checked_through(name)[0])


@pytest.mark.parametrize("name", sorted(set(TIMM_NAME) - set(DERIVED)))
def test_official_weights_give_reference_logits(name):
    num_classes = model.VARIANTS[name]["num_classes"]
    reference = perturbed_timm(TIMM_NAME[name], num_classes)
    checkpoint = official_layout(reference)
    assert "layers.0.downsample.reduction.weight" in checkpoint["model"]
    with torch.device("meta"):  # skip our own init: every tensor comes from the checkpoint
        ours = create_model(name).eval()
    ours.to_empty(device="cpu")
    report = load_weights(ours, checkpoint, verbose=False)
    assert report == {"missing": [], "unexpected": [], "resized": [], "skipped": [], "notes": []}
    size = ours.img_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == (1, num_classes)
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", DERIVED)
def test_derived_variants_are_the_checked_ones_in_another_width_or_head(name):
    """Large variants are base ones made wider, with heads of the same size (32 channels), and in22k ones are
    1k ones with a 21841-class head, both checked against timm's logits above: the same code runs on
    tensors of other sizes. Each one's official checkpoint, made from timm's same variant on the meta
    device, loads tensor for tensor."""
    other, differ = checked_through(name)
    assert other in TIMM_NAME
    assert {k: v for k, v in model.VARIANTS[name].items() if k not in differ} == \
        {k: v for k, v in model.VARIANTS[other].items() if k not in differ}
    for size in (model.VARIANTS[name], model.VARIANTS[other]):
        assert [size["embed_dim"] * 2 ** i // heads for i, heads in enumerate(size["num_heads"])] == [32] * 4
    with torch.device("meta"):
        reference = timm.create_model(TIMM_NAME[name], num_classes=model.VARIANTS[name]["num_classes"])
        ours = create_model(name)
    report = load_weights(ours, official_layout(reference), verbose=False)
    assert report == {"missing": [], "unexpected": [], "resized": [], "skipped": [], "notes": []}


def test_a_v1_checkpoint_at_a_size_whose_last_map_is_smaller_than_the_window_gives_the_official_logits():
    """Window-12 weights (of a 384 px model) at 192 px: the last stage's map is 6 x 6. The official code (and timm)
    give that stage a 6 x 6 window with an 11 x 11 table, which the loader resizes the checkpoint's 23 x 23 to;
    ours keeps the 23 x 23 table and reads its centre, which the loader fills with that same resize."""
    source = perturbed_timm("swin_tiny_patch4_window7_224", 1000, img_size=384, window_size=12)
    with torch.no_grad():  # position biases of a trained model's size, not the init's 0.02
        for name, table in source.named_parameters():
            if name.endswith("relative_position_bias_table"):
                table.normal_(0, 2, generator=torch.Generator().manual_seed(len(name)))
    reference = timm.create_model("swin_tiny_patch4_window7_224", num_classes=1000, img_size=192,
                                  window_size=12).eval()
    state = source.state_dict()
    for name, table in reference.state_dict().items():  # the official loader's resize (utils.load_pretrained)
        if name.endswith("relative_position_bias_table") and table.shape != state[name].shape:
            side, heads = int(table.shape[0] ** 0.5), table.shape[1]
            grid = state[name].T.reshape(1, heads, 23, 23)
            state[name] = F.interpolate(grid, size=(side, side), mode="bicubic").view(heads, -1).T
    reference.load_state_dict(state)
    assert reference.layers[3].blocks[0].attn.relative_position_bias_table.shape == (11 * 11, 3 * 8)
    ours = create_model("swin_tiny_patch4_window7_224", img_size=192, window_size=12).eval()
    report = load_weights(ours, official_layout(source), verbose=False)
    assert len(report["resized"]) == 2 and all("for a 6 x 6 window" in line for line in report["resized"])
    x = torch.randn(1, 3, 192, 192, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() <= 1e-4


def test_a_v2_model_moved_to_a_larger_window_keeps_its_pretrained_window():
    """swinv2_tiny's window-8 weights at 320 px with window 10, as the official fine-tuning configs set it
    (PRETRAINED_WINDOW_SIZES): the position-bias MLP reads offsets on its window-8 scale, so the logits are
    those of timm's model built with pretrained_window_sizes (8, 8, 8, 8), not with the new window's."""
    reference = perturbed_timm("swinv2_tiny_window8_256", 1000, img_size=320, window_size=10,
                               pretrained_window_sizes=(8, 8, 8, 8))
    ours = create_model("swinv2_tiny_patch4_window8_256", img_size=320, window_size=10).eval()
    report = load_weights(ours, official_layout(reference), verbose=False)
    assert report["missing"] == [] and report["unexpected"] == []
    x = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() <= 1e-4


def test_a_v2_file_of_another_window_brings_the_scale_its_position_mlp_learned():
    """swinv2_tiny's window-16 weights given to the window-8 variant: the file's coordinate tables (the official
    code keeps them) say its MLP learned offsets on the window-16 scale, so the model feeds them so, as the official
    model built with pretrained_window_sizes (16, 16, 16, 8) does, and says so; a train.py checkpoint says it by its
    settings, and the windows taken are kept in the overrides a checkpoint rebuilds the model from. The file
    of the variant's own window changes nothing."""
    file = perturbed_timm("swinv2_tiny_window16_256", 1000)
    reference = timm.create_model("swinv2_tiny_window8_256", pretrained_window_sizes=(16, 16, 16, 8)).eval()
    reference.load_state_dict(file.state_dict())
    ours = create_model("swinv2_tiny_patch4_window8_256").eval()
    report = load_weights(ours, official_layout(file), verbose=False)
    assert report["resized"] == ["position-bias offsets on the scale of the file's windows (16, 16, 16, 8), not "
                                 "swinv2_tiny_patch4_window8_256's (8, 8, 8, 8)"]
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() <= 1e-4
    assert create_model_from_checkpoint({"variant": ours.variant, "model_overrides": ours.overrides}).offset_windows() \
        == (16, 16, 16, 8)
    trained = create_model("swinv2_tiny_patch4_window16_256", num_classes=5, img_size=128)  # windows (16, 16, 8, 4)
    checkpoint = {"variant": trained.variant, "model_overrides": trained.overrides, "class_names": list("abcde"),
                  "model": trained.state_dict()}
    fine_tuned = create_model("swinv2_tiny_patch4_window8_256", num_classes=5)
    load_weights(fine_tuned, checkpoint, verbose=False)
    assert fine_tuned.offset_windows() == (16, 16, 16, 8) == trained.offset_windows()
    same = create_model("swinv2_tiny_patch4_window8_256")
    assert load_weights(same, official_layout(perturbed_timm("swinv2_tiny_window8_256", 1000)),
                        verbose=False)["resized"] == []
    assert same.offset_windows() == (8, 8, 8, 8)
    # fine-tuned so and saved as the tutorial saves (torch.save of its state_dict): the scale comes back with it, by
    # load_weights (said) and by a strict load_state_dict alike; it was lost, the outputs 1.6e-3 off
    saved = ours.state_dict()
    assert saved["window_settings"].tolist() == [[16, 0], [16, 0], [16, 0], [8, 0]]
    assert "window_settings" not in same.state_dict()  # a variant as defined: the official keys alone
    # a model rebuilt from a checkpoint's overrides (a resumed run) says its windows as one that loaded them does
    rebuilt = create_model_from_checkpoint({"variant": ours.variant, "model_overrides": ours.overrides})
    assert rebuilt.state_dict()["window_settings"].tolist() == saved["window_settings"].tolist()
    for load in (lambda net: load_weights(net, dict(saved), verbose=False), lambda net: net.load_state_dict(saved)):
        again = create_model("swinv2_tiny_patch4_window8_256").eval()
        load(again)
        with torch.no_grad():
            assert again.offset_windows() == (16, 16, 16, 8) and torch.equal(again(x), ours(x))

def test_a_v2_checkpoint_is_rebuilt_with_the_pretrained_windows_it_was_trained_with():
    """A checkpoint stores the windows (so a change of the variants' defaults cannot change a trained
    model); one that holds none predates them and normalised by each stage's own window."""
    made = create_model("swinv2_tiny_patch4_window8_256", num_classes=5, img_size=128)
    assert made.overrides["pretrained_window_sizes"] == (8, 8, 8, 8)
    now = create_model_from_checkpoint({"variant": made.variant, "model_overrides": made.overrides})
    old = create_model_from_checkpoint({"variant": made.variant, "model_overrides": {"num_classes": 5,
                                                                                         "img_size": 128}})
    assert [stage.pretrained_window_size for stage in now.layers] == [8, 8, 8, 8]
    assert [stage.pretrained_window_size for stage in old.layers] == [0, 0, 0, 0]


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "swinv2_tiny_patch4_window8_256"])
def test_timm_layout_and_training_mode_match(name, tmp_path):
    reference = perturbed_timm(TIMM_NAME[name], 1000, drop_path_rate=0.0)
    path = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), path)  # timm layout: head.fc, merging at the start of a stage
    ours = create_model(name, drop_path_rate=0.0)
    assert load_weights(ours, path, verbose=False)["missing"] == []
    x = torch.randn(2, 3, ours.img_size, ours.img_size)
    for train in (False, True):  # training mode takes the plain attention path on a CPU
        reference.train(train)
        ours.train(train)
        assert (ours(x) - reference(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("version", [1, 2])
def test_cpu_inference_takes_onednns_linears_and_gives_f_linears_outputs(version, monkeypatch):
    """Float32 inference on a CPU runs the linears (the MLP's with its GELU) in oneDNN's kernel; the logits are those
    of F.linear, and training, whose gradients that kernel lacks, keeps F.linear."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", img_size=64, version=version).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # V2's post-norms start at zero: every block would be the identity
    x = torch.randn(2, 3, 64, 64)
    calls, onednn_linear = [], kernels.onednn_linear
    monkeypatch.setattr(kernels, "onednn_linear", lambda *args, **kwargs: calls.append(kwargs) or onednn_linear(
        *args, **kwargs))
    with torch.inference_mode():
        fused = net(x)
    assert {"gelu": True} in calls and {} in calls
    calls.clear()
    net(x).sum().backward()
    assert calls == []
    monkeypatch.setattr(kernels, "ONEDNN_LINEAR", False)
    with torch.inference_mode():
        assert (fused - net(x)).abs().max().item() <= 1e-4 * net(x).abs().max().item()


@pytest.mark.skipif(not kernels.onednn_computes_bf16(), reason="oneDNN takes no bf16 on this CPU")
@pytest.mark.parametrize("version", [1, 2])
def test_cpu_bf16_inference_takes_onednns_linears_and_gives_autocasts_logits(version, monkeypatch):
    """Under bf16 autocast on a CPU, inference runs the stages' linears, their weights cast once, in oneDNN's kernel
    too (the MLP's with its GELU); the logits are autocast's F.linear ones within bf16's rounding, and a float32
    linear (the head) is left to autocast."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", img_size=64, version=version).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 3, 64, 64)
    calls, onednn_linear = [], kernels.onednn_linear
    monkeypatch.setattr(kernels, "onednn_linear", lambda *args, **kwargs: calls.append(args[0].dtype) or onednn_linear(
        *args, **kwargs))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = net(x)
    assert calls and set(calls) == {torch.bfloat16} and fused.dtype == torch.bfloat16
    head = kernels.Linear(8, 4)  # float32, outside a stage: autocast's, in bf16
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not kernels.onednn_linear_applies(torch.randn(2, 8), head) and head(torch.randn(2, 8)).dtype == \
            torch.bfloat16
    monkeypatch.setattr(kernels, "ONEDNN_LINEAR", False)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = net(x)
    assert (fused.float() - plain.float()).norm() <= 0.02 * plain.float().norm()


# --- Any input size, gradients, checkpointing ---

@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("size", [(32, 32), (33, 47), (128, 128), (100, 257), (1030, 300)])
def test_any_input_size(version, size):
    net = create_model("swin_micro_patch4_window4_128", num_classes=3, version=version).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, *size))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_a_layout_is_kept_per_height_and_width():
    """A stage keeps the window layout of each feature-map size it met: a map as high as one before and narrower
    takes its own (padding masked), not the other's, and gives the logits it gives alone."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=3).eval()
    narrow = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        alone = net(narrow)
        for stage in net.layers:
            stage._layouts.clear()
        net(torch.randn(1, 3, 128, 128))
        torch.testing.assert_close(net(narrow), alone)


def test_only_a_map_as_large_as_its_window_is_shifted_by_the_tutorial():
    """The tutorial's code shifts a last map of a window's size, which the official code does not; a smaller map
    (192 px: 6 x 6 for a window of 7) or a larger one is shifted alike by both, and load_weights says nothing."""
    with torch.device("meta"):
        assert create_model("swin_tiny_patch4_window7_224").shifted_by_the_tutorial()
        assert not create_model("swin_tiny_patch4_window7_224", img_size=192).shifted_by_the_tutorial()
        assert not create_model("swin_tiny_patch4_window7_224", img_size=256).shifted_by_the_tutorial()


def test_img_size_is_one_side_said_at_once_not_a_type_error_in_load_weights():
    """A (height, width) img_size ran, then load_weights of a timm or official V1 file failed in map_sides."""
    with pytest.raises(UserError, match=r"img_size is the side of a square image in pixels, an int, got \(224, 160\)"):
        create_model("swin_tiny_patch4_window7_224", img_size=(224, 160))


@pytest.mark.parametrize("version", [1, 2])
def test_gradients_reach_every_parameter(version):
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=4, version=version, drop_path_rate=0.1)
    with torch.no_grad():  # move V2's zero-initialised post-norms so their branches pass gradients
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    F.cross_entropy(net(torch.randn(2, 3, 70, 90)), torch.tensor([0, 3])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_drop_path_keeps_a_sample_whole_scaled_up_or_drops_its_branch():
    """Stochastic depth: each sample's branch is dropped with the rate, or kept and scaled by 1 / (1 - rate), so
    that the sum is the same on average; a bf16 branch joins a float32 stream as it is (V2's); off in eval."""
    torch.manual_seed(0)
    x, y = torch.randn(4000, 3, 2), torch.randn(4000, 3, 2).bfloat16()
    out = model.drop_path_add(x, y, 0.25, training=True)
    kept = (out - x).abs().sum((1, 2)) > 0
    assert out.dtype == torch.float32
    assert torch.allclose(out[kept], x[kept] + y[kept].float() / 0.75, atol=1e-6) and torch.equal(out[~kept], x[~kept])
    assert 0.72 < kept.float().mean().item() < 0.78  # 3000 of 4000 expected, within 4 standard deviations
    assert torch.equal(model.drop_path_add(x, y, 0.25, training=False), x + y)
    # every branch dropped (drop_path_rate=1 through the Python API): the stream as it is, not a division by zero
    assert torch.equal(model.drop_path_add(x, y, 1.0, training=True), x)


def test_deeper_blocks_drop_more_and_attention_dropout_drops():
    """The official recipe's stochastic depth rises linearly over the blocks, 0 at the first to drop_path_rate at
    the last; attn_drop_rate (the Python API's) drops attention weights in training, and nothing in eval."""
    net = create_model("swin_micro_patch4_window4_128", drop_path_rate=0.3)
    rates = [block.drop_path for stage in net.layers for block in stage.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, len(rates)).tolist()) and len(rates) > 2
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", drop_path_rate=0.0, attn_drop_rate=0.5)
    x = torch.randn(2, 3, 64, 64)
    for grad in (True, False):  # training's attention path, and inference's (another kernel, CPU's sdpa)
        with torch.set_grad_enabled(grad):
            assert not torch.allclose(net.train()(x), net(x))  # a draw of its own each pass
    with torch.no_grad():
        assert torch.equal(net.eval()(x), net(x))
        plain = create_model("swin_micro_patch4_window4_128", drop_path_rate=0.0)
        plain.load_state_dict(net.state_dict())
        assert torch.equal(plain.train()(x), net.eval()(x))  # with no dropout, training's pass is eval's


@pytest.mark.parametrize("version", [1, 2])
def test_activation_checkpointing_same_outputs_and_gradients(version):
    def run(checkpointing):
        torch.manual_seed(0)
        net = create_model("swin_micro_patch4_window4_128", num_classes=4, version=version,
                           drop_path_rate=0.3, grad_checkpointing=checkpointing).train()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        torch.manual_seed(1)  # the same drop-path draws in both runs
        out = net(torch.randn(2, 3, 64, 96))
        out.square().sum().backward()
        return out, {n: p.grad for n, p in net.named_parameters()}

    out_plain, grads_plain = run(False)
    out_ckpt, grads_ckpt = run(True)
    assert torch.equal(out_plain, out_ckpt)
    for name in grads_plain:
        assert torch.allclose(grads_plain[name], grads_ckpt[name], atol=1e-6), name


@pytest.mark.parametrize("version", [1, 2])
def test_class_activation_maps_give_the_logits_as_their_means(version):
    """forward_with_maps (predict.py --cam): the head at each place of the final feature map, (B, H/32, W/32,
    classes), rows first; their means are forward()'s logits, so a map shares its logit among the places."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5, version=version).eval()
    x = torch.randn(2, 3, 96, 64)  # 3 x 2 places in the last stage
    with torch.no_grad():
        logits, maps = net.forward_with_maps(x)
        assert maps.shape == (2, 3, 2, 5)
        torch.testing.assert_close(logits, net(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(maps[1, 2, 0], net.head(net.forward_features(x)[1, 2, 0]))


def test_eager_training_keeps_its_rows_of_the_window_gathers():
    """A pass with a gradient makes each window gather's rows once per batch size (an arange and two adds each, 39
    launches of a swin_tiny step); a pass without one, as exports trace it, makes them each time and keeps none."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=4).eval()  # no drop path: outputs to compare
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = net(x)
    layouts = [layout for stage in net.layers for layout in stage._layouts.values()]
    assert not any(layout.training_rows for layout in layouts)
    net(x[:2]).sum().backward()
    kept = {key for layout in layouts for key in layout.training_rows}
    assert kept and all(b == 2 for _, b in kept)
    for makes_rows in (True, False):  # a second batch size: rows of its own, then kept too
        calls = traffic().OperatorTraffic()
        with calls:
            out = net(x)
            out.sum().backward()
        assert torch.allclose(out, expected, atol=1e-6)
        assert (calls.calls["arange"] > 0) == makes_rows
    assert {b for layout in layouts for _, b in layout.training_rows} == {2, 3}


def compiled_graphs(net, x) -> list:
    """The graphs torch.compile captures of net(x), fullgraph (a graph break is an error), by a backend that keeps
    them and runs nothing (it returns zeros shaped as the outputs)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        outputs = gm.graph.find_nodes(op="output")[0].args[0]
        return lambda *args: [torch.zeros_like(node.meta["example_value"]) for node in outputs]
    torch._dynamo.reset()
    try:
        torch.compile(net, backend=capture, fullgraph=True)(x)
    finally:
        torch._dynamo.reset()
    return graphs


def test_a_compiled_training_pass_is_one_graph_that_casts_and_gathers_as_inductor_likes():
    """Under torch.compile the weights are left to autocast's casts and the gathers' rows made in the graph, both
    of which Inductor fuses, and nothing is kept in the model: one graph (a graph break is an error here), with
    autocast on, from a model whose window layouts were built eagerly first, as compiling.compile_model does."""
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=3).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        net(x)
    with torch.autocast("cpu", torch.bfloat16):
        graphs = compiled_graphs(net, x)
    assert len(graphs) == 1
    assert not any(node.target is torch._foreach_copy_ for node in graphs[0].graph.nodes)
    assert not any(layout.training_rows for stage in net.layers for layout in stage._layouts.values())


@pytest.mark.parametrize("version", [1, 2])
def test_compiled_inference_on_a_cpu_is_one_graph(version):
    """Inference compiled on a CPU, float32 and bf16: the linears leave oneDNN's kernel to torch.compile, which picks
    its own, without a graph break at the check (mkldnn.is_available broke it while the check asked it first)."""
    net = create_model("swin_micro_patch4_window4_128", num_classes=3, version=version).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert len(compiled_graphs(net, x)) == 1
        with torch.autocast("cpu", torch.bfloat16):
            assert len(compiled_graphs(net, x)) == 1


def test_swin_layer_in_another_network():
    layer = model.SwinLayer(dim=32, depth=2, num_heads=2, window_size=8, version=2)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), layer, torch.nn.Conv2d(32, 5, 1))
    x = torch.randn(2, 3, 27, 41)
    out = net(x)
    assert out.shape == (2, 5, 27, 41)
    out.mean().backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("version", [1, 2])
def test_a_stage_as_a_layer_takes_any_batch_at_sizes_of_whole_windows(version):
    """A channels-first map whose tokens need no padding nor reordering (16 x 8 at window 8, 1 x 16) reached V2's
    blocks as the permuted view it was, whose view into windows failed for a batch of two or more; each image's
    output is its own, whatever the batch."""
    layer = model.SwinLayer(dim=16, depth=2, num_heads=2, window_size=8, version=version).eval()
    with torch.no_grad():  # off the init, where every V2 block is the identity
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for size in [(16, 8), (1, 16), (8, 8), (24, 3)]:
            x = torch.randn(3, 16, *size)
            out = layer(x)
            assert out.shape == x.shape and (out[1:2] - layer(x[1:2])).abs().max() < 1e-5, size


def test_a_model_run_under_inference_mode_trains_after():
    """A forward under torch.inference_mode (a prediction, Lightning's validation check) cached its window layouts
    as inference tensors, which a later training step cannot save for its backward pass."""
    for net in (model.SwinLayer(dim=16, depth=2, num_heads=2, window_size=4, version=1),
                create_model("swin_micro_patch4_window4_128", img_size=64, version=2)):
        x = torch.randn(2, 16, 9, 14) if isinstance(net, model.SwinLayer) else torch.randn(2, 3, 64, 64)
        with torch.inference_mode():
            net.eval()(x)
        net.train()(x).sum().backward()
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_v2_in_float16_gives_no_nan_for_keys_of_zeros():
    """A V2 model cast with .half(): the cosine attention's norm clamped at 1e-12, which is 0 in float16, so that a
    key of zeros (padding, a zero pixel after a ReLU: V2's keys have no bias) made inf * 0, every output NaN. The
    norm is float32, as autocast computes it."""
    torch.manual_seed(0)
    layer = model.SwinLayer(dim=32, depth=2, num_heads=4, window_size=8, version=2).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(1, 32, 16, 16).relu()
    x[..., 3, 5] = 0
    with torch.no_grad():
        for y in (x, x[..., :9, :14]):  # a zero pixel; a padded map
            expected, got = layer(y), layer.half()(y.half()).float()
            layer.float()
            assert torch.isfinite(got).all() and (got - expected).abs().max() < 0.02 * expected.abs().max()


def test_a_stage_as_a_layer_says_what_it_takes():
    for bad in (dict(dim=30, num_heads=4), dict(dim=16, version=3), dict(dim=16, window_size=0)):
        with pytest.raises(ValueError, match="version is 1 or 2, dim a multiple of num_heads"):
            model.SwinLayer(**bad)
    with pytest.raises(ValueError, match=r"takes \(B, 16, H, W\), channels first; got \(1, 9, 9, 32\)"):
        model.SwinLayer(16)(torch.randn(1, 9, 9, 32))


def test_the_model_says_what_it_takes():
    """A photo without its batch dimension, or channels last: the shapes given, and what to do (permute's and the
    convolution's errors named other shapes, the input padded first)."""
    net = create_model("swin_micro_patch4_window4_128", num_classes=5)
    for shape, hint in (((3, 32, 32), ": add a batch dimension, x.unsqueeze(0)"),
                        ((2, 32, 32, 3), ": channels first, x.permute(0, 3, 1, 2)"), ((2, 1, 32, 32), "")):
        with pytest.raises(ValueError, match=re.escape(f"the model takes images as (B, 3, H, W), got {shape}{hint}")):
            net(torch.randn(shape))


@pytest.mark.parametrize("version", [1, 2])
def test_a_stage_as_a_layer_under_autocast_and_a_model_cast_to_bf16_run(version):
    """A float32 input into a V1 stage under CPU autocast (its norms hold their weights cast: the full model's
    stream is bf16 there already), and a model cast to bf16 as a whole (V2's position-bias MLP reads float32
    offsets): each ran into a dtype error."""
    layer = model.SwinLayer(dim=16, depth=2, num_heads=2, window_size=4, version=version)
    x = torch.randn(1, 16, 9, 14, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        out = layer(x)
    out.float().sum().backward()
    assert out.shape == x.shape and torch.isfinite(x.grad).all()
    net = create_model("swin_micro_patch4_window4_128", img_size=64, version=version).eval()
    with torch.no_grad():
        expected = net(torch.ones(1, 3, 64, 64))
        got = net.to(torch.bfloat16)(torch.ones(1, 3, 64, 64, dtype=torch.bfloat16))
    assert got.dtype == torch.bfloat16 and (got.float() - expected).abs().max() < 0.1 * expected.abs().max()


@pytest.mark.parametrize("version", [1, 2])
def test_a_stage_as_a_layer_exports_with_torch_export_as_a_user_calls_it(version):
    """torch.export.export(net, args), gradients on as they are by default: V2's cosine attention took its own
    autograd Function, whose forward writes with out=, which the export refused."""
    layer = model.SwinLayer(dim=16, depth=2, num_heads=2, window_size=4, version=version).eval()
    x = torch.randn(1, 16, 9, 14)
    program = torch.export.export(layer, (x,))
    with torch.no_grad():
        assert (program.module()(x) - layer(x)).abs().max() < 1e-5


@pytest.mark.parametrize("version", [1, 2])
def test_a_stage_as_a_layer_exports_with_a_dynamic_height_and_width(version):
    """torch.export with a symbolic batch, height and width, gradients on as a user calls it: the window layout is
    built inside the program (windows.py), which gives the layer's outputs at other sizes, padded to whole windows
    or not, and at batch 1; nothing of the trace is left in the layer's cache. A symbolic side must be larger than
    the window, and torch.export says so where the Dim does not."""
    torch.manual_seed(0)
    layer = model.SwinLayer(dim=16, depth=2, num_heads=2, window_size=4, version=version).eval()
    with torch.no_grad():  # off the init, where every V2 block is the identity
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 16, 9, 14)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=5), 3: torch.export.Dim("width", min=5)}
    program = torch.export.export(layer, (x,), dynamic_shapes=(dims,)).module()
    assert not layer.stage._layouts
    with torch.no_grad():
        for size in [(8, 8), (5, 13), (16, 12), (25, 19), (33, 7)]:
            for batch in (1, 3):
                y = torch.randn(batch, 16, *size)
                assert (program(y) - layer(y)).abs().max() < 1e-5, (size, batch)
    # the program's checks of its input's size, on sizes alone: over 65535 windows passes (V2's first block took
    # sdpa's chunking test for training, CUDA's limit, as a bound on the program's size); a side of the window fails
    program._guards_fn(torch.empty(1, 16, 1100, 1100, device="meta"))
    with pytest.raises(AssertionError, match="Guard failed"):
        program._guards_fn(torch.empty(1, 16, 4, 9, device="meta"))
    with pytest.raises(torch._dynamo.exc.UserError, match=r"Dim\('height', min=5\)"):
        torch.export.export(layer, (x,), dynamic_shapes=({2: torch.export.Dim("height")},))


def test_a_model_of_other_sizes_is_checked_as_built_and_takes_any_number_of_stages():
    """create_model takes any SwinTransformer argument: heads that do not divide a stage's width were a reshape's
    RuntimeError at the first forward, a window of 0 a ZeroDivisionError, and five stages an IndexError in the
    default pretrained_window_sizes (four values)."""
    for bad in (dict(num_heads=(3, 3, 3, 3)), dict(window_size=0), dict(num_heads=(1, 2, 4))):
        with pytest.raises(UserError, match="a multiple of its heads"):
            create_model("swin_micro_patch4_window4_128", num_classes=3, **bad)
    for version in (1, 2):
        net = create_model("swin_micro_patch4_window4_128", num_classes=3, version=version, depths=(1, 1, 1, 1, 1),
                           num_heads=(1, 2, 4, 8, 8)).eval()
        with torch.no_grad():
            assert net(torch.randn(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize("version", [1, 2])
def test_torch_func_transforms_give_autograds_gradients(version):
    """torch.func.grad and vmap (per-sample gradients) refused the model's own autograd Functions (token gathers,
    heads, V2's normalisation: no setup_context); under them the plain ops run, with the same gradients."""
    from torch.func import functional_call, grad, vmap
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=3, version=version, drop_path_rate=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    params = {k: p.detach() for k, p in net.named_parameters()}
    x = torch.randn(2, 3, 40, 36)

    def loss(p, images):
        return functional_call(net, p, (images,)).square().sum()

    per_sample = vmap(grad(lambda p, image: loss(p, image[None])), in_dims=(None, 0))(params, x)
    loss(dict(net.named_parameters()), x[1:]).backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(per_sample[name][1], p.grad, rtol=1e-4, atol=1e-5)
    # under autocast too: the stage's one cast of its weights (precision._CastOnce) is autocast's own under torch.func
    net.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads = grad(loss)(params, x)
        loss(dict(net.named_parameters()), x).backward()
    for name, p in net.named_parameters():
        assert (grads[name] - p.grad).norm() <= 5e-2 * p.grad.norm() + 1e-6, name  # bf16 rounds on other paths


def test_the_tutorials_use_checkpoint_is_grad_checkpointing():
    """The tutorial's model functions pass **kwargs to its SwinTransformer, whose use_checkpoint switched activation
    checkpointing on: create_model(num_classes=5, use_checkpoint=True) was refused as an unknown option."""
    from model import swin_micro_patch4_window4_128 as create_model
    model = create_model(num_classes=5, use_checkpoint=True)
    assert all(stage.grad_checkpointing for stage in model.layers)
    assert model.overrides["grad_checkpointing"] is True and "use_checkpoint" not in model.overrides
