"""Mixed precision: the autocast type a run uses, its context, and weights cast once a stage under it.

    from precision import amp_dtype, autocast
    amp = amp_dtype("auto", device)          # bf16 on a GPU that has it, else fp16; None on a CPU
    amp = amp_dtype("auto", device, training=True)  # and bf16 on a CPU that computes in it
    with autocast(device, amp):
        loss = criterion(model(images), targets)
"""
import contextlib
import weakref

import torch
import torch.nn as nn


def amp_dtype(mode: str, device: torch.device, training: bool = False):
    """None (full precision), torch.bfloat16 or torch.float16 for --amp auto|bf16|fp16|off. `training`: auto takes
    bf16 on a CPU that computes in it too (cpu_computes_bf16); prediction keeps float32 there, its probabilities
    the same on every machine and those its exports are checked against."""
    if mode == "auto" and device.type == "cpu" and training and cpu_computes_bf16():
        return torch.bfloat16
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":  # bf16 where the GPU computes in it (Ampere on); without including_emulation=False a T4 or
        # V100 says yes too, as it can hold bf16 tensors, and trained in emulated bf16, without tensor cores
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16: AMD Zen 4 on, Intel Cooper Lake; AMX: Intel
    Sapphire Rapids on), where oneDNN's bf16 matmuls run at about twice float32's rate: swin_tiny's training step
    1.80-1.91x on a 2-core Zen 4 EPYC (bench/bench_model.py --dtype fp32 bf16; docs/training.md). Elsewhere bf16 is
    converted in software, slower than float32."""
    try:
        return torch.backends.mkldnn.is_available() and (torch.cpu._is_avx512_bf16_supported()
                                                         or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes (they are private): float32, as before
        return False


def amp_name(dtype) -> str:
    """How --amp names an autocast type: bf16, fp16, or off for none."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "off")


def autocast(device: torch.device, dtype):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


# --- Weights cast once a stage under autocast ---

# Under autocast each linear casts its weight and bias to bf16 (fp16) as it runs, as do the LayerNorms that keep
# autocast's type, and the backward pass casts their gradients back: two kernel launches a parameter a step, 306 of
# a swin_tiny training step's 1131 operator calls, each a few microseconds of the CPU's time that a fast GPU,
# waiting on its launches, spends idle (docs/gpu.md). A stage instead casts those parameters in one
# kernel as it starts, and their gradients in one; the values are those autocast makes, so the results are the same
# to the bit (tests/test_precision.py). Per stage, not per model: under DDP a stage's gradients are ready, and sent,
# while the backward pass goes on to the stage before.
CAST_ONCE = True


class _CastOnce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dtype, *params):
        return tuple(_copies(params, dtype))

    @staticmethod
    def backward(ctx, *grads):
        return (None, *_copies(grads, torch.float32))


def _copies(tensors, dtype) -> list:
    """Copies of `tensors` in `dtype`: views of one new buffer, written by one multi-tensor kernel. The views
    are made in C++ (what DDP's buckets use): a Python call each would cost more than the casts saved."""
    buffer = torch.empty(sum(t.numel() for t in tensors), dtype=dtype, device=tensors[0].device)
    copies = torch._utils._unflatten_dense_tensors(buffer, tensors)
    torch._foreach_copy_(copies, list(tensors))
    return copies


def cast_at_every_use(m: nn.Module) -> bool:
    """Whether autocast casts the module's parameters to its type each time it runs: a linear's, and those of a
    module that says so (model.LayerNorm, where it keeps autocast's type)."""
    return isinstance(m, nn.Linear) or (isinstance(m, nn.LayerNorm) and getattr(m, "casts_weights_at_every_use", False))


def casts_weights_once(device_type: str) -> bool:
    """Whether a stage casts its weights once here: eager under autocast. Compiled graphs fuse the casts
    themselves, exports run without autocast, and torch.func (grad, vmap) takes autocast's own casts."""
    return CAST_ONCE and not torch.compiler.is_compiling() and torch.is_autocast_enabled(device_type) and \
        not torch._C._are_functorch_transforms_active()


# module -> its linears and LayerNorms, listed at its first cast: walking a stage's tree at every step cost 440 us of
# the CPU a swin_tiny pass on the 2-core EPYC, where the list costs 61 (CPU time that an eager step on a fast GPU
# waits for). A submodule put in later is left to autocast, which gives the same values; one taken out is cast, unused.
_candidates = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def weights_cast(module: nn.Module, dtype: torch.dtype):
    """Within it, the module's parameters that autocast casts at every use are held cast to `dtype`, by one
    kernel (autocast then leaves them as they are); gradients reach the parameters through the cast."""
    if (candidates := _candidates.get(module)) is None:
        candidates = _candidates[module] = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.LayerNorm))]
    slots = [(m, name, p) for m in candidates if cast_at_every_use(m)
             for name, p in m._parameters.items() if p is not None and p.dtype == torch.float32]
    if not slots:
        yield
        return
    params = [p for _, _, p in slots]
    if torch.is_grad_enabled():  # training, or a gradient through the stage (predict.py --cam)
        _inference_casts.pop(module, None)  # its weights may move at every step
        casts = _CastOnce.apply(dtype, *params)
    else:
        casts = inference_casts(module, dtype, params) if HOLD_INFERENCE_CASTS else _copies(params, dtype)
    try:
        for (m, name, _), cast in zip(slots, casts):
            m._parameters[name] = cast  # the dict itself: nn.Module's setattr refuses a tensor for a parameter
        yield
    finally:
        for m, name, p in slots:
            m._parameters[name] = p


# module -> ((the type, its parameters' addresses and versions), their casts): without gradients a stage casts its
# weights once and holds the casts while none of them changes, not at every pass (inference in bf16 1.01-1.06x and
# 1.02-1.03x, swin_tiny and swinv2_tiny at batch 8, two runs: bench/bench_model.py --dtype bf16 --held-casts on off,
# 2-core EPYC, 2026-12-02). Most in-place changes move a tensor's version counter (a foreach optimizer step,
# load_state_dict's copy_, an EMA's lerp), under no_grad and inference_mode too; one made through .data does not, as
# autograd does not see it either, nor do fused AdamW's step and collectives (forget_held_casts). The casts are held
# until the stage runs with gradients again, an optimizer steps or an evaluation starts: half its weights' size,
# float32 to bf16 or fp16. Not with gradients: casts made in inference_mode cannot be saved for a backward pass.
HOLD_INFERENCE_CASTS = True
_inference_casts = weakref.WeakKeyDictionary()


def forget_held_casts() -> None:
    """Drop every stage's held casts: after an optimizer step and as an evaluation starts. Not every change moves a
    version counter: fused AdamW (train.py's, on a GPU and a CPU) writes the weights in place without, and so do
    torch.distributed's broadcast (evaluate_saved's, on every process but the first) and all_reduce; and a compiled
    or graphed training pass never runs weights_cast's Python, which dropped them. Held past a step, the casts
    scored every validation after the first with the weights it saw."""
    _inference_casts.clear()


def inference_casts(module: nn.Module, dtype: torch.dtype, params: list) -> list:
    """`params` cast to `dtype`, the module's held casts while every parameter is the one they were made of."""
    made_of = (dtype, [(p.data_ptr(), p._version) for p in params])
    held = _inference_casts.get(module)
    if held is None or held[0] != made_of:
        held = _inference_casts[module] = (made_of, _copies(params, dtype))
    return held[1]
