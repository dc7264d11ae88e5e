"""windows.py: the window machinery (windows, shifts, padding, masks, the moves between them) against a
brute-force definition of (shifted) window attention, through every attention path; the window geometry's rules,
the official one and the tutorial's."""
import math

import pytest
import torch
import torch.nn.functional as F

import attention
import model
import windows
from model import SwinBlock
from windows import StageLayout


def brute_force_attention(block: SwinBlock, x: torch.Tensor, window_size: int, shifted: bool,
                          pretrained_window_size: int = 0, tutorial_shift: bool = False) -> torch.Tensor:
    """Attention over the whole H x W map, each token limited to the tokens of its own window.

    Windows by definition, not by rolling: the regular grid, or for shifted blocks the grid moved
    by the shift (windows start at rows 0, s, s + M, s + 2M, ...), cut off at the border.
    """
    attn = block.attn
    b, h, w, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    window, shift, _ = windows.window_geometry(h, w, window_size, tutorial_shift)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()

    def window_id(pos, size, s):
        return (pos - s) // size + 1 if (shifted and s) else pos // size

    same = ((window_id(rows, window[0], shift[0])[:, None] == window_id(rows, window[0], shift[0])[None])
            & (window_id(cols, window[1], shift[1])[:, None] == window_id(cols, window[1], shift[1])[None]))
    dy, dx = rows[:, None] - rows[None], cols[:, None] - cols[None]
    if block.v2:
        norm = [pretrained_window_size] * 2 if pretrained_window_size else window
        coords = torch.stack([dy / max(norm[0] - 1, 1), dx / max(norm[1] - 1, 1)], -1).float() * 8
        coords = torch.sign(coords) * torch.log2(coords.abs() + 1) / math.log2(8)
        bias = 16 * torch.sigmoid(attn.cpb_mlp(coords))  # (L, L, heads)
        qkv = F.linear(x, attn.qkv.weight, torch.cat([attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias]))
    else:
        index = (dy.clamp(-window_size + 1, window_size - 1) + window_size - 1) * (2 * window_size - 1) \
            + dx.clamp(-window_size + 1, window_size - 1) + window_size - 1
        bias = attn.relative_position_bias_table[index]
        qkv = attn.qkv(x)
    q, k, v = qkv.reshape(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
    if block.v2:
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logits = logits * attn.logit_scale.clamp(max=math.log(100)).exp()
    else:
        logits = (q * d ** -0.5) @ k.transpose(-2, -1)
    logits = (logits + bias.permute(2, 0, 1)).masked_fill(~same, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)
    return attn.proj(out).view(b, h, w, c)


def windowed_attention(block: SwinBlock, x: torch.Tensor, window_size: int, shifted: bool,
                       pretrained_window_size: int = 0, tutorial_shift: bool = False) -> torch.Tensor:
    """The model's path: pad, gather into windows, attend, gather back, crop."""
    b, h, w, c = x.shape
    layout = StageLayout(h, w, window_size, block.v2, pretrained_window_size, x.device, tutorial_shift)
    hp, wp = layout.padded
    tokens = windows.gather_tokens(F.pad(x, (0, 0, 0, wp - w, 0, hp - h)).reshape(b, hp * wp, c), layout, "enter")
    if shifted:
        tokens = windows.gather_tokens(tokens, layout, "to_shifted")
    out = block.attn(tokens.view(-1, layout.area, c), layout, shifted).view(b, hp * wp, c)
    out = windows.gather_tokens(out, layout, "leave_shifted" if shifted else "leave_regular")
    return out.view(b, hp, wp, c)[:, :h, :w]


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("size", [(14, 14), (9, 23), (5, 3), (7, 30), (1, 1), (16, 11)])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # its reference path: meant
def test_window_attention_matches_brute_force(v2, shifted, size):
    torch.manual_seed(0)
    window_size, pretrained = 7, (6 if v2 and size == (16, 11) else 0)
    block = SwinBlock(dim=16, num_heads=2, window_size=window_size, v2=v2).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        if v2:  # one head's temperature past V2's cap of 100, which a trained model's can reach
            block.attn.logit_scale[0].fill_(math.log(1000))
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        expected = brute_force_attention(block, x, window_size, shifted, pretrained)
        for kind in attention.ATTENTION_KINDS:  # FlexAttention runs its reference path on a CPU, forward only
            with attention.forced(kind):
                got = windowed_attention(block, x, window_size, shifted, pretrained)
            assert (got - expected).abs().max().item() < 1e-5, kind


@pytest.mark.parametrize("size", [(7, 7), (7, 30)])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # its reference path: meant
def test_a_map_as_large_as_its_window_shifted_as_the_tutorial_shifts_it_matches_brute_force(size):
    """The tutorial's code shifts a 7 x 7 map with window 7 (224 px's last stage), the official code does not: with
    tutorial_shift, the shifted windows by definition, cut at the border, as for a larger map."""
    torch.manual_seed(0)
    block = SwinBlock(dim=16, num_heads=2, window_size=7).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, *size, 16)
        expected = brute_force_attention(block, x, 7, True, tutorial_shift=True)
        for kind in attention.ATTENTION_KINDS:  # a shift mask over a single window, new to every path (the fused
            # kernel, forced on a CPU, gives way to plain: its one-window mask is unchecked without a GPU)
            with attention.forced(kind):
                got = windowed_attention(block, x, 7, True, tutorial_shift=True)
            assert (got - expected).abs().max().item() < 1e-5, kind
        assert (windowed_attention(block, x, 7, True) - expected).abs().max().item() > 1e-3  # the official rule differs


def test_window_geometry_follows_official_rule():
    # a map no larger than the window: one window over all of it, no shift
    assert windows.window_geometry(7, 7, 7) == ((7, 7), (0, 0), (7, 7))
    assert windows.window_geometry(7, 7, 7, tutorial_shift=True) == ((7, 7), (3, 3), (7, 7))  # the tutorial's rule
    assert windows.window_geometry(5, 3, 7, tutorial_shift=True) == ((5, 3), (0, 0), (5, 3))
    assert windows.window_geometry(5, 3, 7) == ((5, 3), (0, 0), (5, 3))
    # larger maps: full windows, shift of half a window, padded up to whole windows
    assert windows.window_geometry(56, 56, 7) == ((7, 7), (3, 3), (56, 56))
    assert windows.window_geometry(9, 23, 7) == ((7, 7), (3, 3), (14, 28))
    assert windows.window_geometry(6, 20, 8) == ((6, 8), (0, 4), (6, 24))


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("size", [(6, 9), (12, 12), (3, 10)])
def test_stage_matches_block_by_block_reference(v2, size):
    """A whole stage (tokens kept in window order across blocks, padding carried along and
    masked) equals its blocks applied one by one on the unpadded map, plus the merging."""
    torch.manual_seed(0)
    stage = model.SwinStage(dim=16, depth=4, num_heads=2, window_size=4, v2=v2, downsample=True).eval()
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, *size, 16)
        expected = x
        for i, block in enumerate(stage.blocks):
            shifted = i % 2 == 1
            if v2:
                expected = expected + block.norm1(brute_force_attention(block, expected, 4, shifted))
                expected = expected + block.norm2(block.mlp(expected))
            else:
                expected = expected + brute_force_attention(block, block.norm1(expected), 4, shifted)
                expected = expected + block.mlp(block.norm2(expected))
        expected = stage.downsample(expected)
        assert (stage(x) - expected).abs().max().item() < 1e-4
