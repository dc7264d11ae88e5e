"""Where each token of a feature map sits in Swin's windows, regular and shifted.

V1 Sec. 3.2: self-attention within non-overlapping windows, and in every second block within
windows shifted by half a window (a cyclic shift, with a mask keeping apart the regions it brings
together). A StageLayout holds, for one feature-map size, what every block of a stage needs: the
token orders and the moves between them, the masks, and the indices of the relative position bias.

Tokens stay in window order through a whole block (every op but attention acts per token), so
moving between the regular and the shifted windows is one gather per block (`gather_tokens`), where
a roll, a partition, a reverse and a roll back would each copy the feature map. Any size runs: a map
is padded to whole windows and the padding is masked out of attention; a side no longer than the
window gets one unshifted window over all of it.

A layout is built from the sizes as Python ints and cached per size, its shortcuts (no mask, no move) decided
from them. Traced with symbolic sizes (torch.export with a dynamic height or width; torch.compile with them fails
elsewhere first), the same code builds it from SymInts as operations of the traced graph, for every size at once:
nothing there may branch on a size's value, so the shortcuts are not taken (a mask of zeros, a gather that moves
nothing where they would apply; `StageLayout.symbolic`). Only the window and shift stay ints: a side of a symbolic
size must be larger than the window (torch.export says so, asking for a Dim with min=window_size + 1).
"""
import math

import torch

# Masked attention logits. The official -100 leaves exp() results in the denormal range, which
# x86 CPUs compute many times slower (bench/bench_model.py --flush-denormal shows what that
# costs timm); at -1e4 they underflow to exactly 0, and being finite a fully masked row still
# cannot give NaN.
MASKED = -1e4


def is_symbolic(*sizes) -> bool:
    """Whether any of the sizes is a symbol of a trace (torch.export's dynamic dims), not a number."""
    return any(isinstance(size, torch.SymInt) for size in sizes)


def window_geometry(height: int, width: int, window_size: int, tutorial_shift: bool = False):
    """Window, shift and padded size for a height x width map, per side.

    A side no longer than the window gets a single window spanning it and no shift: the
    official code does this when the map is no larger than the window (the last stage). With
    `tutorial_shift`, a side as long as the window is shifted all the same, as the tutorial's code shifts it
    (224 px's last stage, 7 x 7 with window 7): the weights that code trained expect it.
    Symbolic sizes give the same formulas: the comparisons with the window are decided by their
    range, and the padded sides are integer ceilings, which keep the symbolic formulas in integers.
    """
    # `if`, not min(): a symbolic side's test is then decided (by its range), where min would stay a formula
    one = (lambda side: side < window_size) if tutorial_shift else (lambda side: side <= window_size)
    window = tuple(side if one(side) else window_size for side in (height, width))
    shift = tuple(0 if one(side) else window_size // 2 for side in (height, width))
    padded = tuple((side + w - 1) // w * w for side, w in zip((height, width), window))
    return window, shift, padded


def relative_index(window, table_window) -> torch.Tensor:
    """Index into a (2*Th-1) x (2*Tw-1) table of relative offsets for every token pair of a window.

    (N, N) with N = window area; Th, Tw = table_window, at least as large as window.
    """
    ys, xs = torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + table_window[0] - 1  # (N, N), from 0
    dx = xs[:, None] - xs[None, :] + table_window[1] - 1
    return dy * (2 * table_window[1] - 1) + dx


def log_spaced_coords(window, pretrained_window) -> torch.Tensor:
    """V2 Sec. 3.3: relative offsets, normalised to [-8, 8] and log-spaced, ((2Wh-1)*(2Ww-1), 2).

    Offsets are divided by the pre-training window (less one) when given, so a model moved to
    larger windows sees the offsets it was trained on plus new, larger ones.
    """
    dy = torch.arange(-(window[0] - 1), window[0], dtype=torch.float32)
    dx = torch.arange(-(window[1] - 1), window[1], dtype=torch.float32)
    table = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1)  # (2Wh-1, 2Ww-1, 2)
    norm = pretrained_window if pretrained_window[0] > 0 else window
    table = table / torch.tensor([max(norm[0] - 1, 1), max(norm[1] - 1, 1)]) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.reshape(-1, 2)


def region_labels(size: int, window: int, shift: int) -> torch.Tensor:
    """Label the three bands the cyclic shift makes along one side: the official slicing's
    [0, size - window) 0, [size - window, size - shift) 1, [size - shift, size) 2, by comparisons,
    which a symbolic size traces."""
    index = torch.arange(size)
    if not shift:
        return torch.zeros_like(index)
    return (index >= size - window).long() + (index >= size - shift).long()


def cyclic(index: torch.Tensor, shift: int, size: int) -> torch.Tensor:
    """(index + shift) % size, for indices and a shift in [0, size): by a comparison, as the ONNX exporter
    (torch 2.14) cannot take a remainder by a symbolic size."""
    moved = index + shift
    return moved - (moved >= size).long() * size


class StageLayout:
    """Where each token of an H x W map sits in the regular and in the shifted windows.

    Tokens are listed window by window (each window row-major) over the padded map, the
    "canvas". `order[s]` gives, for block kind s (0 regular, 1 shifted), the canvas index of
    each listed token; `masks[s]` is (num_windows, N, N), MASKED between tokens of different
    shift regions and towards padding, or None when nothing is masked. With symbolic sizes
    (`symbolic`), every mask and move is there, and `crop` lists the canvas index of each token of
    the map, row-major: a slice of the canvas would fix whether it is padded.
    """

    def __init__(self, height, width, window_size, v2, pretrained_window_size, device, tutorial_shift=False):
        self.window, shift, self.padded = window_geometry(height, width, window_size, tutorial_shift)
        wh, ww = self.window
        hp, wp = self.padded
        self.area = wh * ww
        self.num_windows = (hp // wh) * (wp // ww)
        rows = torch.arange(hp).view(hp // wh, wh, 1, 1)
        cols = torch.arange(wp).view(1, 1, wp // ww, ww)

        def window_order(t):  # (hp//wh, wh, wp//ww, ww) -> window by window, (num_windows * N,)
            return t.permute(0, 2, 1, 3).reshape(-1)

        # What is masked and which moves change nothing follow from the geometry, in plain ints: decided
        # from the index tensors' values, they would be data-dependent branches that torch.export cannot
        # trace when a layout is built inside an exported program. With symbolic sizes even the geometry's
        # tests would fix the sizes (padded or not, one window across or more): the layout then masks the
        # padding (a mask of zeros where there is none) and makes every move.
        self.symbolic = is_symbolic(height, width)
        padded = self.symbolic or self.padded != (height, width)
        orders, masks = [], []
        for sh, sw in ((0, 0), shift):
            # cyclic shift (V1 Sec. 3.2): shifted[r, c] = canvas[(r + sh) % hp, (c + sw) % wp]
            src_r, src_c = cyclic(rows, sh, hp), cyclic(cols, sw, wp)
            orders.append(window_order(src_r * wp + src_c))
            if not (padded or sh or sw):  # one region and no padding: nothing to mask
                masks.append(None)
                continue
            region = window_order(region_labels(hp, wh, sh).view(-1, wh, 1, 1) * 3
                                  + region_labels(wp, ww, sw).view(1, 1, -1, ww))
            padding = window_order((src_r >= height) | (src_c >= width))
            region = region.view(self.num_windows, self.area)
            blocked = (region[:, :, None] != region[:, None, :]) | padding.view(self.num_windows, 1, self.area)
            masks.append(blocked.float().mul(MASKED).to(device))
        self.masks = masks

        # Index lists for one gather each: canvas -> regular windows, regular <-> shifted,
        # windows -> canvas. None where the move changes nothing: the window order is the row-major
        # order when windows are one row high or one spans the width, and the shift is a move when
        # it is not zero.
        inverse = [torch.empty_like(o).scatter_(0, o, torch.arange(o.numel())) for o in orders]
        to_shifted, to_regular = inverse[0][orders[1]], inverse[1][orders[0]]
        row_major = wh == 1 or (not self.symbolic and ww == wp)
        unshifted = shift == (0, 0)
        moves = {
            "enter": (orders[0], inverse[0], row_major),
            "to_shifted": (to_shifted, to_regular, unshifted),
            "to_regular": (to_regular, to_shifted, unshifted),
            "leave_regular": (inverse[0], orders[0], row_major),
            "leave_shifted": (inverse[1], orders[1], row_major and unshifted),
        }
        self.moves = {name: None if identity else (index.to(device), inv.to(device))
                      for name, (index, inv, identity) in moves.items()}
        self.crop = None
        if self.symbolic:
            self.crop = (torch.arange(height).view(-1, 1) * wp + torch.arange(width)).view(-1).to(device)
        self.training_rows = {}  # (move, batch size) -> its rows and inverse rows in eager training (gather_tokens)

        table_window = self.window if v2 else (window_size, window_size)
        self.rel_index = relative_index(self.window, table_window).view(-1).to(device)
        if v2:
            pretrained = (pretrained_window_size, pretrained_window_size)
            self.rel_coords = log_spaced_coords(self.window, pretrained).to(device)


class _GatherTokens(torch.autograd.Function):
    """Rows of a (B*L, C) tensor by index; the gradient is one more gather, by the inverse
    permutation (autograd's would be a fill of zeros and a scatter)."""

    @staticmethod
    def forward(ctx, x, index, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def gather_tokens(x: torch.Tensor, layout: "StageLayout", move: str) -> torch.Tensor:
    """(B, L, C) -> (B, L, C), tokens reordered by one of the layout's moves."""
    if layout.moves[move] is None:
        return x
    b, length, c = x.shape
    x = x.reshape(b * length, c)
    if torch.is_grad_enabled() and x.requires_grad and not torch._C._are_functorch_transforms_active():
        return _GatherTokens.apply(x, *training_rows(layout, move, b)).view(b, length, c)
    index = layout.moves[move][0]  # plain ops, standard in exports:
    return x.index_select(0, (first_rows(b, index) + index).view(-1)).view(b, length, c)


# Gathering whole rows of the flattened batch is faster than index_select on dim 1, which parallelises worse. The
# rows are made per call (an arange and an add, small beside the gather), so that the batch size stays a symbol in
# an exported program and a compiled graph fuses them; eager training keeps them for its batch size instead, 39
# kernel launches of a swin_tiny step.
def first_rows(b: int, index: torch.Tensor) -> torch.Tensor:
    """(B, 1): each sample's first row in the flattened batch."""
    n = index.numel()
    if is_symbolic(n):  # arange's length would be ceil(b * n / n), which torch.export does not know to be b
        return (torch.arange(b, device=index.device) * n).view(b, 1)
    return torch.arange(0, b * n, n, device=index.device).view(b, 1)


def training_rows(layout: "StageLayout", move: str, b: int) -> tuple:
    """The move's index and inverse as rows of the flattened (B * L, C) batch: kept in eager training, for a few
    batch sizes (training's batches are all full), and never dropped: a CUDA graph of the step reads them."""
    keep = not torch.compiler.is_compiling()  # a compiled graph makes its own, fused
    if keep and (move, b) in layout.training_rows:
        return layout.training_rows[(move, b)]
    index, inverse = layout.moves[move]
    offsets = first_rows(b, index)
    rows = (offsets + index).view(-1), (offsets + inverse).view(-1)
    if keep and len(layout.training_rows) < 4 * len(layout.moves):
        layout.training_rows[(move, b)] = rows
    return rows
