"""variants.py and create_model: the variants' names and aliases, the settings a model is built with and a
checkpoint keeps, and the official configs' drop path rates."""
import pytest
import torch

import model
from model import create_model
from utils import UserError
from variants import resolve_variant
from weights import create_model_from_checkpoint


def test_names_and_aliases():
    from model import swin_base_patch4_window12_384 as tutorial_create_model
    assert tutorial_create_model.__name__ == "swin_base_patch4_window12_384"
    with torch.device("meta"):  # no memory or time spent on weights
        net = tutorial_create_model(num_classes=5)
        assert net.variant == "swin_base_patch4_window12_384" and net.head.out_features == 5
        assert create_model("swin_base_patch4_window7_224_in22k").head.out_features == 21841
        assert create_model("swinv2_base_patch4_window12_192").head.out_features == 21841
        for name in model.VARIANTS:
            create_model(name)
    assert model.resolve_variant("swinv2_tiny_window8_256") == "swinv2_tiny_patch4_window8_256"
    assert model.resolve_variant("swinv2_base_window12to24_192to384.ms_in22k_ft_in1k") == \
        "swinv2_base_patch4_window12to24_192to384"
    assert model.resolve_variant("swin_base_patch4_window7_224_22k") == "swin_base_patch4_window7_224_in22k"
    assert model.resolve_variant("swinv2_large_patch4_window12_192_22k") == "swinv2_large_patch4_window12_192"
    assert model.resolve_variant("swin_base_patch4_window7_224.ms_in22k") == "swin_base_patch4_window7_224_in22k"
    assert model.resolve_variant("swin_tiny_patch4_window7_224_22kto1k_finetune") == "swin_tiny_patch4_window7_224"
    with pytest.raises(UserError, match="swin_tiny_patch4_window7_224.*Valid models: .*swinv2_large"):
        create_model("swin_tiny_patch4_window7")
    with pytest.raises(UserError,
                       match="Did you mean swin_tiny_patch4_window7_224, swin_tiny_patch4_window7_224_in22k"):
        create_model("swin_tiny")  # a short form lists the variants it begins


def test_overrides():
    with torch.device("meta"):
        net = create_model("swinv2_tiny_patch4_window8_256", num_classes=7, img_size=384, window_size=12,
                           drop_path_rate=0.0, pretrained_window_sizes=(8, 8, 8, 8))
    assert net.img_size == 384 and net.layers[0].window_size == 12 and net.layers[3].pretrained_window_size == 8
    assert net.overrides == {"num_classes": 7, "img_size": 384, "window_size": 12, "drop_path_rate": 0.0,
                             "pretrained_window_sizes": (8, 8, 8, 8)}
    with pytest.raises(UserError, match="unknown model option"):
        create_model("swin_tiny_patch4_window7_224", window=8)


def test_each_variant_trains_at_the_drop_path_rate_of_the_official_config_of_its_weights():
    """The 1k configs from scratch (0.2 tiny, 0.3 small, 0.5 base); the 22k ones, and swin_base's 22k->1k
    fine-tuning, whose weights the 1k swin_base variants load (configs/swin/*_22k.yaml, *_22kto1k_finetune.yaml)."""
    rates = {name: cfg["drop_path_rate"] for name, cfg in model.VARIANTS.items()}
    sizes = ("tiny", "small", "base", "large")
    assert [rates[f"swin_{size}_patch4_window7_224"] for size in sizes] == [0.2, 0.3, 0.2, 0.2]
    assert [rates[f"swin_{size}_patch4_window7_224_in22k"] for size in sizes] == [0.1, 0.2, 0.2, 0.2]
    assert rates["swin_base_patch4_window12_384"] == 0.2 and rates["swinv2_base_patch4_window8_256"] == 0.5
    # a checkpoint keeps its rate: stored from now on; one from before, which holds none, at the rate it trained with
    with torch.device("meta"):
        assert create_model("swin_base_patch4_window7_224").overrides["drop_path_rate"] == 0.2
        earlier = create_model_from_checkpoint({"variant": "swin_base_patch4_window7_224",
                                                "model_overrides": {"num_classes": 5}})
    assert earlier.overrides["drop_path_rate"] == 0.5

def test_v2_blocks_start_as_the_identity():
    """V2's init zeroes the post-norms (official _init_respostnorm): a fresh stage passes its input through."""
    layer = model.SwinLayer(dim=16, depth=2, num_heads=2, window_size=4, version=2)
    x = torch.randn(2, 16, 9, 13)
    assert torch.equal(layer(x), x)
    v1 = model.SwinLayer(dim=16, depth=2, num_heads=2, window_size=4, version=1)
    assert not torch.equal(v1(x), x)


def test_the_official_v2_fine_tuned_file_names_are_aliases():
    for name in ("swinv2_base_patch4_window12to16_192to256", "swinv2_large_patch4_window12to24_192to384"):
        assert resolve_variant(name + "_22kto1k_ft") == name
