"""Swin Transformer V1 and V2 image classifiers.

Swin V1: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
ICCV 2021, https://arxiv.org/abs/2103.14030
Swin V2: Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022,
https://arxiv.org/abs/2111.09883

    from model import swin_tiny_patch4_window7_224 as create_model    # as in the tutorial
    model = create_model(num_classes=5)

    from model import create_model
    from weights import load_weights
    model = create_model("swinv2_tiny_patch4_window8_256", num_classes=5, img_size=320)
    load_weights(model, "weights/swinv2_tiny_patch4_window8_256.pth")  # official, timm or ours

Parameter names are the official Microsoft ones, so official checkpoints load as they are.
Any input size runs. Where each token sits in the regular and shifted windows (cyclic shift,
masks, padding) is windows.py's: a stage builds a StageLayout per feature-map size.
"""
import contextlib
import math
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

import kernels
from attention import choose_attention, scaled_normalize, split_heads, window_attention
from precision import casts_weights_once, weights_cast
from utils import UserError, run_cli
from windows import StageLayout, gather_tokens, is_symbolic, window_geometry
from variants import NO_PRETRAINED_WEIGHTS, VARIANTS, resolve_variant

MAX_LOGIT_SCALE = math.log(1.0 / 0.01)  # V2 Sec. 3.2: the attention temperature is capped at 100


def drop_path_add(x: torch.Tensor, y: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """x + y, with y dropped for a random subset of samples (stochastic depth)."""
    if rate == 0.0 or not training:
        return x + y
    if rate >= 1.0:  # every sample's branch dropped (create_model's drop_path_rate=1: train.py refuses it)
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - rate)  # (B, 1, ...): 0 or 1
    # addcmul takes a bf16 y into a float32 x as it is (V2's stream), where autocast would first copy y to float32,
    # and scales the kept ones as it adds them: no launch of a division of its own
    with torch.autocast(x.device.type, enabled=False):
        return torch.addcmul(x, y, keep, value=1 / (1 - rate))


# --- Building blocks ---

class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that can keep the autocast type (`keep_autocast_type`): an input already in it is
    normalised in one kernel, float32 inside, and written in it.

    CUDA autocast runs layer_norm in float32: for a bf16 input a cast up, the norm and, where a linear
    follows, a cast down, five times the bytes of the norm alone. Kept where that changes nothing that
    matters: V1's pre-norms feed a linear, which casts to bf16 anyway; V2's post-norms give a residual
    branch its output, which in V1 is a linear's, in bf16, too (the stream it is added to keeps its
    type); V1's patch-embedding norm starts the residual stream, which in V1 is bf16 from stage 2 on in
    any AMP training (patch merging ends with a linear), and so is bf16 in stage 1 too. V2's stream
    stays float32, as the official V2 trains it: its patch-embedding and merging norms follow autocast.
    The affine parameters are cast as autocast casts a linear's weight: CUDA's kernel takes one type.
    CUDA training goes to kernels.py's kernels instead (kernels.LAYER_NORM, by default where they run), with the
    same output types and the affine parameters read in float32.
    """

    def __init__(self, dim: int, keep_autocast_type: bool = False):
        super().__init__(dim)
        self.keep_autocast_type = keep_autocast_type

    @property
    def casts_weights_at_every_use(self) -> bool:  # for precision.weights_cast; kernels.py's reads them in float32
        return self.keep_autocast_type and not kernels.fused_layer_norm_taken(self.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        autocast_type = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        keep = self.keep_autocast_type and x.dtype == autocast_type
        if kernels.fused_layer_norm_applies(x):  # CUDA training, where they run: CUDA autocast's output types
            out_dtype = x.dtype if keep or autocast_type is None else torch.float32
            return kernels.layer_norm(x, self.weight, self.bias, self.eps, out_dtype)
        if keep:
            with torch.autocast(device, enabled=False):
                return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)
        return super().forward(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a relative position bias.

    V1 (Sec. 3.2): dot-product attention scaled by head_dim ** -0.5 and a learned table of
    (2M-1)^2 biases per head. V2 (Sec. 3.2): scaled cosine attention, a learned temperature per
    head, and a bias from a small MLP over log-spaced coordinates (16 * sigmoid), so windows
    can grow after pre-training.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, v2: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.v2 = v2
        self.scale = (dim // num_heads) ** -0.5
        if v2:
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
            self.cpb_mlp = nn.Sequential(
                kernels.Linear(2, 512), nn.ReLU(inplace=True), kernels.Linear(512, num_heads, bias=False))
            # V2 gives q and v a bias but not k (a key bias cancels in the softmax)
            self.qkv = kernels.Linear(dim, dim * 3, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
            self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        else:
            self.qkv = kernels.Linear(dim, dim * 3, bias=qkv_bias)
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size - 1) ** 2, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.attn_drop = attn_drop
        self.proj = kernels.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self, layout: StageLayout) -> torch.Tensor:
        """(heads, N, N) bias for the layout's window."""
        if self.v2:
            coords = layout.rel_coords.to(self.cpb_mlp[0].weight.dtype)  # a model cast to bf16 as a whole too
            table = 16 * torch.sigmoid(self.cpb_mlp(coords))  # (T, heads)
        else:
            table = self.relative_position_bias_table
        n = layout.area
        return table[layout.rel_index].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, layout: StageLayout, shifted: bool) -> torch.Tensor:
        """x: (B * num_windows, N, C) -> (B * num_windows, N, C)."""
        b_, n, c = x.shape
        heads = self.num_heads
        if self.v2 and self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            qkv = (kernels.onednn_linear(x, self.qkv.weight, bias.to(x.dtype))  # bf16 x: the bias as autocast casts it
                   if kernels.onednn_linear_applies(x, self.qkv)
                   else F.linear(x, self.qkv.weight, bias))
        else:
            qkv = self.qkv(x)
        bias = self.position_bias(layout)  # (heads, N, N)
        # an int index: torch.compile (torch 2.11) breaks the graph on a list indexed by a bool
        mask = layout.masks[int(shifted)]  # (num_windows, N, N) or None
        dropout = self.attn_drop if self.training else 0.0
        kind = choose_attention(x, dropout)
        # V2: cosine similarity times a per-head temperature, folded into q
        temperature = torch.clamp(self.logit_scale, max=MAX_LOGIT_SCALE).exp() if self.v2 else None  # (heads, 1, 1)
        scale = 1.0 if self.v2 else self.scale  # V2's temperature is in q already
        # packed: q, k and v read in place from qkv, the output written as proj reads it; V2's q and k normalised in
        # the kernel, which has no backward for that: a V2 pass that needs gradients takes the unpacked kernels
        v2_gradients = self.v2 and torch.is_grad_enabled() and (qkv.requires_grad or temperature.requires_grad)
        if kind == "triton" and not v2_gradients:
            out = kernels.packed_window_attention(qkv, heads, bias, mask, scale,
                                                  temperature.view(heads) if self.v2 else None)
            return self.proj_drop(self.proj(out))
        q, k, v = split_heads(qkv, heads)  # (B_, heads, N, d)
        if self.v2:
            q = scaled_normalize(q, temperature)
            k = scaled_normalize(k, torch.ones_like(temperature))
        x = window_attention(q, k, v, bias, mask, dropout, kind, scale)  # (B_, heads, N, d)
        x = x.transpose(1, 2).reshape(b_, n, c)  # (B_, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = kernels.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = kernels.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        if kernels.onednn_linear_applies(x, self.fc1):  # GELU inside fc1's kernel: a pass less over the widest tensor
            x = kernels.onednn_linear(x, self.fc1.weight, self.fc1.bias, gelu=True)
        else:
            x = self.act(self.fc1(x))
        return self.drop(self.fc2(self.drop(x)))


class SwinBlock(nn.Module):
    """Window attention then MLP, each a residual branch.

    V1 normalises each branch's input (pre-norm); V2 Sec. 3.1 normalises its output instead
    (residual post-norm), which keeps activations from growing with depth.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, v2: bool = False):
        super().__init__()
        self.v2 = v2
        self.drop_path = drop_path
        self.norm1 = LayerNorm(dim, keep_autocast_type=True)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop, v2)
        self.norm2 = LayerNorm(dim, keep_autocast_type=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, layout: StageLayout, shifted: bool) -> torch.Tensor:
        """x: (B, L, C), tokens in this block's window order."""
        b, length, c = x.shape
        if self.v2:
            y = self.norm1(self.attn(x.view(-1, layout.area, c), layout, shifted))
        else:
            y = self.attn(self.norm1(x).view(-1, layout.area, c), layout, shifted)
        x = drop_path_add(x, y.view(b, length, c), self.drop_path, self.training)
        y = self.norm2(self.mlp(x)) if self.v2 else self.mlp(self.norm2(x))
        return drop_path_add(x, y, self.drop_path, self.training)


class PatchMerging(nn.Module):
    """Halve the resolution, double the channels: each 2x2 patch of tokens becomes one.

    V1 normalises the 4C concatenation before the reduction; V2 (Sec. 3.1, post-norm) after.
    """

    def __init__(self, dim: int, v2: bool = False):
        super().__init__()
        self.v2 = v2
        self.reduction = kernels.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = LayerNorm(2 * dim if v2 else 4 * dim, keep_autocast_type=not v2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C); an odd side is zero-padded."""
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        # official order of the four: (0,0), (1,0), (0,1), (1,1) as (row, col) offsets
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.norm(self.reduction(x)) if self.v2 else self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Blocks alternating regular (W-MSA) and shifted (SW-MSA) windows, then optional merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path=0.0,
        v2: bool = False,
        pretrained_window_size: int = 0,
        downsample: bool = False,
    ):
        super().__init__()
        self.window_size = window_size
        self.v2 = v2
        self.pretrained_window_size = pretrained_window_size
        rates = drop_path if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, mlp_ratio, qkv_bias, drop, attn_drop, rates[i], v2)
            for i in range(depth))
        self.downsample = PatchMerging(dim, v2) if downsample else None
        self.grad_checkpointing = False
        self.tutorial_shift = False  # SwinTransformer's tutorial_shift
        self._layouts = {}

    def layout(self, height: int, width: int, device) -> StageLayout:
        if is_symbolic(height, width):  # traced for any size (windows.py): built in the graph, kept by no cache
            return StageLayout(height, width, self.window_size, self.v2, self.pretrained_window_size, device,
                               self.tutorial_shift)
        key = (height, width, device)
        if key not in self._layouts:
            if len(self._layouts) >= 16:  # many sizes seen (prediction at native sizes): start over
                self._layouts.clear()
            # ordinary tensors under inference_mode too: a layout built in a prediction (or a validation that uses
            # it, as Lightning's does) is the one a later training step takes, which cannot save inference tensors
            with contextlib.nullcontext() if torch.compiler.is_compiling() else torch.inference_mode(False):
                self._layouts[key] = StageLayout(
                    height, width, self.window_size, self.v2, self.pretrained_window_size, device, self.tutorial_shift)
        return self._layouts[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C), or (B, ceil(H/2), ceil(W/2), 2C) with merging."""
        device = x.device.type
        if casts_weights_once(device):
            dtype = torch.get_autocast_dtype(device)
            if not self.v2:  # V1's stream is in the autocast type from the patch embedding on (LayerNorm), as its
                x = x.to(dtype)  # norms, their weights held cast, need it: a stage used as a layer's input too
            with weights_cast(self, dtype):
                return self.run_blocks(x)
        return self.run_blocks(x)

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        layout = self.layout(h, w, x.device)
        hp, wp = layout.padded
        if layout.symbolic or (hp, wp) != (h, w):  # symbolic: padded or not is not known, and a pad of 0 is one
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        x = gather_tokens(x.reshape(b, hp * wp, c), layout, "enter")
        for i, block in enumerate(self.blocks):
            shifted = i % 2 == 1
            if i > 0:
                x = gather_tokens(x, layout, "to_shifted" if shifted else "to_regular")
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, layout, shifted, use_reentrant=False)
            else:
                x = block(x, layout, shifted)
        last_shifted = len(self.blocks) % 2 == 0 and len(self.blocks) > 0
        x = gather_tokens(x, layout, "leave_shifted" if last_shifted else "leave_regular")
        if layout.symbolic:  # a slice would fix whether the map is padded; the crop's gather holds for any size
            x = x.index_select(1, layout.crop).view(b, h, w, c)
        else:
            x = x.view(b, hp, wp, c)[:, :h, :w]
        return x if self.downsample is None else self.downsample(x)


def init_weights(module: nn.Module) -> None:
    """The official init: truncated-normal linears (std 0.02) with zero biases, unit LayerNorms;
    and V2's post-norms at zero, so that each block starts as the identity (V2 repo's
    _init_respostnorm)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():  # a second pass: modules() visits a block before its norms
        if isinstance(m, SwinBlock) and m.v2:
            for norm in (m.norm1, m.norm2):
                nn.init.zeros_(norm.weight)
                nn.init.zeros_(norm.bias)


class SwinLayer(nn.Module):
    """A Swin stage as a layer for other networks: (B, C, H, W) in, (B, C, H, W) out, any H x W.

    E.g. in a detector's neck, as the Swin V2 integration into YOLOv5 does:
        nn.Sequential(nn.Conv2d(256, 192, 1), SwinLayer(192, depth=2, num_heads=6, window_size=8))
    It exports (torch.export, ONNX) with a symbolic height and width where each side of its map is larger than
    the window (a Dim's min): the window layout is then built inside the program (windows.py).
    """

    def __init__(
        self,
        dim: int,
        depth: int = 2,
        num_heads: int = 4,
        window_size: int = 8,
        version: int = 2,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if version not in (1, 2) or dim % num_heads or window_size < 1 or depth < 1:  # said now, not at a forward
            raise ValueError(f"SwinLayer(dim={dim}, depth={depth}, num_heads={num_heads}, window_size={window_size}, "
                             f"version={version!r}): version is 1 or 2, dim a multiple of num_heads, window_size and "
                             "depth 1 or more")
        self.dim = dim
        self.stage = SwinStage(dim, depth, num_heads, window_size, mlp_ratio,
                               drop_path=drop_path_rate, v2=version == 2)
        self.stage.grad_checkpointing = grad_checkpointing
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, H, W) -> (B, dim, H, W), laid out channels-last in memory (as the stage's tokens are), or at a
        size that is not whole windows a crop of the padded map in that layout."""
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"SwinLayer({self.dim}, ...) takes (B, {self.dim}, H, W), channels first; got "
                             f"{tuple(x.shape)}")
        # the stage's tokens contiguous: a permuted view reached V2's blocks as it was where no padding or window
        # order copied it, and their view into windows failed for a batch of two or more
        return self.stage(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Patch partition and linear embedding as one strided convolution, then LayerNorm."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, v2: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm(embed_dim, keep_autocast_type=not v2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/4, W/4, C); sides not divisible by the patch are zero-padded."""
        channels = self.proj.in_channels
        if x.dim() != 4 or x.shape[1] != channels:  # said as given: padded first, the conv's error named other sides
            hint = (": add a batch dimension, x.unsqueeze(0)" if x.dim() == 3 and x.shape[0] == channels else
                    ": channels first, x.permute(0, 3, 1, 2)" if x.dim() == 4 and x.shape[-1] == channels else "")
            raise ValueError(f"the model takes images as (B, {channels}, H, W), got {tuple(x.shape)}{hint}")
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            x = F.pad(x, (0, -w % p, 0, -h % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


# Buffers that the official code, the tutorial's and timm's keep (timm's k_bias) and this model rebuilds from its
# sizes: never loaded, so that the tutorial's model.load_state_dict(torch.load(...)) works strictly too.
REBUILT_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask", "k_bias")


def _drop_rebuilt_buffers(state_dict, prefix, *args):
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith(REBUILT_BUFFERS)]:
        del state_dict[key]


# A state dict's key for what load_weights set after the model was built (the tutorial's shift, a V2 file's offset
# scale): not weights, yet outputs depend on them, so that a model saved as the tutorial saves it (torch.save of
# its state_dict) and loaded again gives the same outputs
WINDOW_SETTINGS = "window_settings"


def _save_window_settings(model, state_dict, prefix, local_metadata) -> None:
    """A state dict holds the window settings where they differ from the model's as built (create_model: the
    variant's as defined): the state dicts of the variants as defined, as official and timm files, keep their keys."""
    if (settings := model.window_settings()) != model.built_settings:
        state_dict[prefix + WINDOW_SETTINGS] = torch.tensor(settings, dtype=torch.int64)  # (stages, 2)


def _load_window_settings(model, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """The window settings a state dict holds, set on the model (and taken out: no parameter or buffer of its)."""
    settings = state_dict.pop(prefix + WINDOW_SETTINGS, None)
    if settings is None:
        return
    if tuple(settings.shape) != (len(model.layers), 2):
        errors.append(f"{prefix + WINDOW_SETTINGS} is for {settings.shape[0]} stages, and the model has "
                      f"{len(model.layers)}")
        return
    windows, shifts = zip(*settings.tolist())
    model.set_pretrained_window_sizes(windows)
    if any(shifts):
        model.set_tutorial_shift()


class SwinTransformer(nn.Module):
    """Swin V1 (version=1) or V2 (version=2) classifier; the variants' sizes are variants.py's."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        version: int = 1,
        pretrained_window_sizes=(0, 0, 0, 0),
        grad_checkpointing: bool = False,
        tutorial_shift: bool = False,
    ):
        super().__init__()
        if version not in (1, 2):
            raise UserError(f"version must be 1 or 2, got {version}")
        if isinstance(img_size, bool) or not isinstance(img_size, numbers.Integral) or img_size < 1:
            raise UserError(f"img_size is the side of a square image in pixels, an int, got {img_size!r} (any input "
                            "size runs, non-square too: img_size is the size the model is meant for)")
        num_stages = len(depths)
        if len(num_heads) != num_stages or window_size < 1 or patch_size < 1 or any(  # said now, not at a forward
                heads < 1 or embed_dim * 2 ** i % heads for i, heads in enumerate(num_heads)):
            raise UserError(f"depths {tuple(depths)}, num_heads {tuple(num_heads)}, embed_dim {embed_dim}, "
                            f"window_size {window_size}, patch_size {patch_size}: a stage's width (embed_dim, doubled "
                            "each stage) is a multiple of its heads, num_heads has a value per stage, the window and "
                            "patch 1 or more")
        # a value per stage: the default's four, or a variant's, for a model of another number of stages
        pretrained_window_sizes = (tuple(pretrained_window_sizes) + (0,) * num_stages)[:num_stages]
        self.img_size = img_size  # the size the model is meant for; any size runs
        self.num_classes = num_classes
        self.version = version
        self.num_features = embed_dim * 2 ** (num_stages - 1)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, v2=version == 2)
        self.pos_drop = nn.Dropout(drop_rate)
        num_blocks = sum(depths)  # deeper blocks drop more, linearly up to drop_path_rate
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.layers = nn.ModuleList(
            SwinStage(
                embed_dim * 2 ** i, depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias,
                drop_rate, attn_drop_rate, rates[sum(depths[:i]):sum(depths[:i + 1])],
                v2=version == 2, pretrained_window_size=pretrained_window_sizes[i],
                downsample=i < num_stages - 1)
            for i in range(num_stages))
        self.norm = LayerNorm(self.num_features)
        self.head = kernels.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)
        self.set_grad_checkpointing(grad_checkpointing)
        if tutorial_shift:
            self.set_tutorial_shift()
        self.built_settings = self.window_settings()
        self._register_load_state_dict_pre_hook(_drop_rebuilt_buffers)
        self._register_state_dict_hook(_save_window_settings)
        self._register_load_state_dict_pre_hook(_load_window_settings, with_module=True)

    def map_sides(self) -> list:
        """Each stage's feature map side at the model's image size: rounded up, as maps are padded, then merged."""
        sides = [-(-self.img_size // self.patch_embed.patch_size)]
        while len(sides) < len(self.layers):
            sides.append(-(-sides[-1] // 2))
        return sides

    def window_settings(self) -> list:
        """[[pretrained window, shifted as the tutorial's code shifts], ...] a stage each: what load_weights may set
        after the model is built, which its state dict then holds (WINDOW_SETTINGS)."""
        return [[stage.pretrained_window_size, int(stage.tutorial_shift)] for stage in self.layers]

    def offset_windows(self) -> tuple:
        """V2: each stage's window on whose scale its position-bias MLP is fed offsets (V2 Sec. 3.3): its pretrained
        window, or where it has none its own, as its map at the model's image size clamps it."""
        return tuple(stage.pretrained_window_size or window_geometry(side, side, stage.window_size)[0][0]
                     for stage, side in zip(self.layers, self.map_sides()))

    def set_pretrained_window_sizes(self, windows) -> None:
        """V2: the windows whose offsets the position-bias MLP learned (weights.load_weights sets a file's), kept in
        the overrides a checkpoint rebuilds the model from."""
        for stage, window in zip(self.layers, windows):
            stage.pretrained_window_size = window
            stage._layouts.clear()  # built with the old scale
        if hasattr(self, "overrides"):
            self.overrides["pretrained_window_sizes"] = tuple(windows)

    def set_tutorial_shift(self) -> None:
        """Shift a stage whose map is as large as its window (224 px's last), as the tutorial's code does and the
        official code does not: the weights that code trained (weights.load_weights sets it for them) expect it. Kept
        in the overrides a checkpoint rebuilds the model from."""
        for stage in self.layers:
            stage.tutorial_shift = True
            stage._layouts.clear()  # built without the shift
        if hasattr(self, "overrides"):
            self.overrides["tutorial_shift"] = True

    def shifted_by_the_tutorial(self) -> bool:
        """Whether a stage's map at the model's image size is as large as its window: there the tutorial's code
        shifts and the official code does not (set_tutorial_shift)."""
        return any(side == stage.window_size and len(stage.blocks) > 1  # a stage of one block shifts none
                   for stage, side in zip(self.layers, self.map_sides()))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass (V2 Sec. 3.5): same results,
        far less memory, about a third more compute."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/32, W/32, C) after the final norm."""
        x = self.pos_drop(self.patch_embed(x))
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(1, 2)))

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, classes), class activation maps (B, H/32, W/32, classes)): the head applied at each
        location of the final feature map (CAM, Zhou et al., CVPR 2016). The head is linear and follows a mean
        over locations, so each logit is its map's mean: the maps say where in the image a class was seen."""
        maps = self.head(self.forward_features(x))
        return maps.mean(dim=(1, 2)), maps


def maps_of(maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Each image's map of one class: forward_with_maps' (B, H/32, W/32, classes), and (B,) classes, -> (B, H/32,
    W/32)."""
    return maps[torch.arange(len(classes), device=maps.device), :, :, classes.to(maps.device)]


def create_model(name: str, num_classes: int = None, **overrides) -> SwinTransformer:
    """Build a variant by name (official or timm spelling).

    num_classes defaults to the variant's (1000, or 21841 for in22k); overrides are any
    SwinTransformer argument: img_size, window_size, drop_path_rate,
    pretrained_window_sizes, grad_checkpointing, ...
    """
    variant = resolve_variant(name)
    if "use_checkpoint" in overrides:  # the tutorial's and the official code's name for it
        overrides["grad_checkpointing"] = bool(overrides.pop("use_checkpoint"))
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    unknown = set(overrides) - set(SwinTransformer.__init__.__code__.co_varnames)
    if unknown:
        raise UserError(f"unknown model option(s) {sorted(unknown)} for {variant}")
    model = SwinTransformer(**{**VARIANTS[variant], **overrides})
    model.variant = variant  # plain data a checkpoint stores to rebuild the model
    model.overrides = dict(overrides)
    # stored, so that a change of the variants' defaults cannot change a checkpoint's model (drop path rates did)
    model.overrides.setdefault("drop_path_rate", VARIANTS[variant]["drop_path_rate"])
    if VARIANTS[variant]["version"] == 2:
        model.overrides.setdefault("pretrained_window_sizes", VARIANTS[variant]["pretrained_window_sizes"])
    # window settings asked of the variant are the state dict's to say too (WINDOW_SETTINGS), as those load_weights
    # sets: a model rebuilt from a checkpoint's overrides, saved, gives them to the variant built plain
    windows = (tuple(VARIANTS[variant].get("pretrained_window_sizes", ())) + (0,) * len(model.layers))
    model.built_settings = [[window, 0] for window in windows[:len(model.layers)]]
    return model


def _variant_function(name: str):
    def build(num_classes: int = None, **overrides) -> SwinTransformer:
        return create_model(name, num_classes, **overrides)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"Build {name}" + (" (no official weights)." if name in NO_PRETRAINED_WEIGHTS else ".")
    return build


# One function per variant, named after it, so the tutorial's import works:
#     from model import swin_base_patch4_window12_384 as create_model
globals().update({name: _variant_function(name) for name in VARIANTS})


def main() -> None:
    """python model.py: the variants and their sizes (the table in README.md)."""
    print(f"{'variant':44s} ver  params  image  window  classes")
    for name, cfg in VARIANTS.items():
        with torch.device("meta"):  # sizes only: no memory, no time spent on weights
            params = sum(p.numel() for p in create_model(name).parameters())
        note = "  (no official weights)" if name in NO_PRETRAINED_WEIGHTS else ""
        print(f"{name:44s} V{cfg['version']}  {params / 1e6:5.1f}M  {cfg['img_size']:5d}  {cfg['window_size']:6d}"
              f"  {cfg['num_classes']:7d}{note}")


if __name__ == "__main__":
    run_cli(main)
