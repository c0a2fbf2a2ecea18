"""A second device on a CPU-only machine, for tests: the device rules of a GPU without one.

No GPU runs the tests, yet every command must run on CUDA. Inside ``FakeDevice()``, a tensor
of the ``Elsewhere`` subclass counts as being on another device (it reports ``meta`` as its
``device``, so ``device=x.device``, ``.to(x.device)`` and ``--device meta`` put data there)
and an op refuses to take it together with a CPU tensor of one or more dimensions, as CUDA
does; ``.numpy()`` needs ``.cpu()`` first. The data stay on the CPU, so a computation on the
fake device gives bit for bit the numbers the same computation gives on the CPU."""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

FAKE = torch.device("meta")  # what a tensor elsewhere reports as its device


class Elsewhere(torch.Tensor):
    """A CPU tensor that, under ``FakeDevice``, counts as one on another device."""
    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, protocol):  # saved as the plain tensor, as torch.save keeps a CUDA tensor's data
        return torch.Tensor.__reduce_ex__(self.as_subclass(torch.Tensor), protocol)

    def __deepcopy__(self, memo):
        with torch._C.DisableTorchFunction():
            out = torch.Tensor.clone(self).as_subclass(Elsewhere)
        if getattr(self, "_is_param", False):
            out = torch.nn.Parameter(out, requires_grad=self.requires_grad)
        memo[id(self)] = out
        return out


def _is_fake(d) -> bool:
    return isinstance(d, (torch.device, str)) and torch.device(d).type == "meta"


def _wrap(x):
    if isinstance(x, torch.Tensor) and not isinstance(x, Elsewhere):
        return x.as_subclass(Elsewhere)
    return x


def _plain(x):
    return x.as_subclass(torch.Tensor) if isinstance(x, Elsewhere) else x


# ops that may take both (copying between devices, reading attributes, moving)
MIX_OK = {"copy_", "__setitem__", "to", "type_as", "set_", "__get__", "__set__", "_has_compatible_shallow_copy_type"}


def _target(func_name: str, args, kwargs) -> bool | None:
    """Where a factory function or ``.to()`` puts its result: True the fake device, False the
    CPU, None not said (then: where its inputs are)."""
    places = [kwargs.get("device")]
    if func_name == "to":
        places += list(args[1:])
    for place in places:
        if isinstance(place, torch.Tensor):
            return isinstance(place, Elsewhere)
        if isinstance(place, (torch.device, str)):
            return _is_fake(place)
    return None


class FakeDevice(TorchFunctionMode):
    """The device rules of a GPU for Elsewhere tensors (module docstring). Module.to() with
    the fake device keeps the subclass on parameters (they are replaced, not updated in place)."""

    def __enter__(self):
        self._overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.__future__.set_overwrite_module_params_on_conversion(self._overwrite)
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", str(func))
        if name == "__get__" and getattr(func, "__self__", None) is torch.Tensor.device and isinstance(args[0], Elsewhere):
            return FAKE
        flat, _ = tree_flatten((args, kwargs))
        there = any(isinstance(t, Elsewhere) for t in flat)
        here = [t for t in flat if isinstance(t, torch.Tensor) and not isinstance(t, Elsewhere) and t.dim() > 0]
        if there and here and name not in MIX_OK:
            raise RuntimeError(f"fake device: {name} takes a tensor on the device and a CPU tensor of shape "
                               f"{tuple(here[0].shape)}")
        if name == "numpy" and there:
            raise TypeError("fake device: can't convert a device tensor to numpy; use .cpu() first")
        target = _target(name, args, kwargs)
        if _is_fake(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if name == "to":
            args = (args[0], *("cpu" if _is_fake(a) else a for a in args[1:]))
        out = func(*args, **kwargs)
        if name == "cpu" or target is False:
            return tree_map(_plain, out)
        return tree_map(_wrap, out) if target or there else out


def elsewhere(module_or_tensor):
    """Put a module's parameters and buffers (in place; returns the module), or a tensor, on the fake device."""
    if isinstance(module_or_tensor, torch.Tensor):
        return _wrap(module_or_tensor)
    return module_or_tensor.to(FAKE)
