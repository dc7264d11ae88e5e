"""The host-device waits that a training step would make on a GPU, found on a CPU (tests/test_engine.py).

A CPU spelled with an index, torch.device("cpu", 0), stands for the device: factories and .to() given it keep it
apart from the host's "cpu", and Waits follows which tensors are on it through every op. The ops that would make
the CPU wait for a GPU are counted where the code calls them: .item(), bool(), float() (_local_scalar_dense),
.tolist(), .numpy(), blocking copies between host and device (x[i] = number copies a 0-dim host tensor), torch.tensor
(data, device=...), nonzero, boolean-mask indexing and the other ops whose output's size the GPU decides.

An emulation, not CUDA: a device tensor's .device reads "cpu", so .to(tensor.device) stays on the device and only
.cpu() and .to("cpu") count as a way to the host; an op that PyTorch splits otherwise on a CPU than on CUDA may
wait here alone (F.one_hot, which checks its classes on a CPU with .item(): allowed where it is given num_classes).
"""
import os
import traceback
from collections import Counter

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.multiprocessing.reductions import StorageWeakRef

DEVICE = torch.device("cpu", 0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default: ".item()/bool()/float()", aten.nonzero.default: "nonzero",
           aten.masked_select.default: "masked_select", aten.bincount.default: "bincount",
           aten.equal.default: "torch.equal", aten.repeat_interleave.Tensor: "repeat_interleave",
           aten._unique2.default: "unique", aten.unique_dim.default: "unique",
           aten.unique_consecutive.default: "unique_consecutive"}


def caller() -> str:
    """The project's line that made the op (not the tests')."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(ROOT) and os.sep + "tests" + os.sep not in frame.filename:
            return f"{os.path.relpath(frame.filename, ROOT)}:{frame.lineno}: {frame.line}"
    return "?"


class Waits(TorchDispatchMode):
    """With Waits(tensors) as waits, Reads(waits): counts in waits.found, by (what, where), the waits for the
    device of what runs, `tensors` (the model's, an EMA's) and what is made from them or for DEVICE being on it."""

    def __init__(self, tensors=()):
        super().__init__()
        self.storages, self.found, self.allowed, self.to_host = {}, Counter(), 0, False  # the device's, by address
        for tensor in tensors:
            self.mark(tensor)

    def mark(self, tensor: torch.Tensor, on_device: bool = True) -> None:
        """On the device, with every view and alias (by its storage), or no longer (on_device=False)."""
        storage = tensor.untyped_storage()
        if on_device:  # a weak reference holds the address until the storage is freed: no other takes it before
            self.storages[storage._cdata] = StorageWeakRef(storage)
        else:
            self.storages.pop(storage._cdata, None)

    def dev(self, tensor) -> bool:
        if not isinstance(tensor, torch.Tensor) or tensor.untyped_storage()._cdata not in self.storages:
            return False
        if self.storages[tensor.untyped_storage()._cdata].expired():
            del self.storages[tensor.untyped_storage()._cdata]
            return False
        return True

    def wait(self, what: str) -> None:
        if not self.allowed:
            self.found[(what, caller())] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_device = any(self.dev(t) for t in tensors)
        target = kwargs.get("device")
        if func in SYNCING and on_device:
            self.wait(SYNCING[func])
        elif func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default) and on_device and any(
                i is not None and i.dtype == torch.bool for i in args[1]):
            self.wait("boolean-mask index")
        elif func is aten.copy_.default and self.dev(args[0]) != self.dev(args[1]) and not (
                args[2] if len(args) > 2 else kwargs.get("non_blocking", False)):
            scalar = args[1].dim() == 0 and not self.dev(args[1])
            self.wait("blocking copy_ " + ("host->device" if self.dev(args[0]) else "device->host")
                      + (" of a 0-dim host tensor (x[i] = number)" if scalar else ""))
        elif func is aten._to_copy.default and target == DEVICE and not on_device \
                and not kwargs.get("non_blocking", False):
            self.wait("blocking .to() host->device")
        out = func(*args, **kwargs)
        if func is aten._to_copy.default and target is not None:  # "cpu" from Reads' .to("cpu") alone is the host
            on_device = target == DEVICE or (on_device and not self.to_host)
        elif func is aten.copy_.default:
            on_device = self.dev(args[0])
        elif not tensors:
            on_device = target == DEVICE
        if on_device:
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    self.mark(tensor)
        return out


class Reads(TorchFunctionMode):
    """Waits' calls above the ops: reads that a CPU makes of its memory without one (.tolist(), .numpy(), a .cpu()
    of nothing), torch.tensor(data, device=DEVICE), and ops that a CPU splits into reads where CUDA does not."""

    def __init__(self, waits: Waits):
        super().__init__()
        self.waits = waits

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs, waits = kwargs or {}, self.waits
        if func in (torch.Tensor.tolist, torch.Tensor.numpy) and waits.dev(args[0]):
            waits.wait(f".{func.__name__}()")
        if func is torch.tensor and kwargs.get("device") is not None and torch.device(kwargs["device"]) == DEVICE:
            waits.wait("torch.tensor(data, device=...) host->device")
            out = func(*args, **kwargs)
            waits.mark(out)
            return out
        if func is F.one_hot and (args[1] if len(args) > 1 else kwargs.get("num_classes", -1)) > 0:
            waits.allowed += 1  # on CUDA it checks nothing: scatter asserts on the device
            try:
                return func(*args, **kwargs)
            finally:
                waits.allowed -= 1
        to_host = waits.dev(args[0]) if args else False
        if func is torch.Tensor.to:
            to_host = to_host and any(a == "cpu" for a in (*args[1:], kwargs.get("device")))
        elif func is not torch.Tensor.cpu:
            to_host = False
        if not to_host:
            return func(*args, **kwargs)
        if not kwargs.get("non_blocking", False) and not (len(args) > 2 and args[2] is True):
            waits.wait(f".{func.__name__}() device->host")
        waits.to_host = True
        try:
            out = func(*args, **kwargs)
        finally:
            waits.to_host = False
        if waits.dev(out):  # the tensor itself, which a CPU does not copy: a copy on the host
            out = out.clone()
            waits.mark(out, False)
        return out
