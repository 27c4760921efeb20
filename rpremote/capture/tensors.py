"""torch tensors as raw out-of-band bytes, and off the GPU when the other side has none.

torch's own pickling (``torch.save`` inside ``__reduce_ex__``) copies a tensor's bytes into the
pickle stream and records its device, so a CUDA result fails to load on a laptop ("Attempting
to deserialize object on a CUDA device") and a 200 MB tensor is copied, base64'd and copied
again. Here a plain tensor or ``nn.Parameter`` reduces to its bytes as a pickle-5
``PickleBuffer`` (sent out of band, no copy), its dtype, shape and the device it was on; the
receiving side rebuilds it on the device its policy picks:

- ``"cpu"``: always CPU (the client's default for results),
- ``"keep"``: the original device when this machine has it, else CPU (the worker's default
  for arguments),
- a torch device string (``"cuda"``, ``"cuda:1"``): that device.

Views of one storage arrive as separate tensors (torch's pickling keeps the sharing); the same
tensor object twice in one payload stays one object (pickle's memo). Tensors this does not
handle (sparse, quantized, subclasses, non-leaf tensors that require grad) keep torch's pickling.

torch is never imported here: a tensor can only exist when the user's code imported it.
"""

from __future__ import annotations

import contextvars
import pickle
import sys
from contextlib import contextmanager
from typing import Any, Iterator

_policy: contextvars.ContextVar[str] = contextvars.ContextVar("rpremote_tensor_device", default="keep")


@contextmanager
def devices(policy: str) -> Iterator[None]:
    """Rebuild tensors loaded inside this block on the device ``policy`` picks."""
    token = _policy.set(policy)
    try:
        yield
    finally:
        _policy.reset(token)


def check_policy(policy: Any) -> str:
    """``policy`` if it names a device policy, else ValueError saying what to write."""
    if isinstance(policy, str) and (policy in ("cpu", "keep") or policy.startswith(("cuda", "mps", "xpu"))):
        return policy
    raise ValueError(f"a tensor device is 'cpu', 'keep' (the device it was on, when this "
                     f"machine has it) or a torch device such as 'cuda' or 'cuda:1'; got {policy!r}")


def reduce_tensor(obj: Any) -> Any:
    """The reduction for a plain tensor or Parameter, or NotImplemented for anything else."""
    torch = sys.modules.get("torch")
    if torch is None:
        return NotImplemented
    cls = type(obj)
    if cls is not torch.Tensor and cls is not torch.nn.Parameter:
        return NotImplemented
    if (obj.layout != torch.strided or obj.is_quantized or obj.is_nested
            or obj.device.type == "meta" or (obj.requires_grad and not obj.is_leaf)):
        return NotImplemented
    data = obj.detach()
    if data.device.type != "cpu":
        data = data.cpu()
    data = data.resolve_conj().resolve_neg().contiguous()
    raw = data.reshape(-1).view(torch.uint8).numpy()
    return rebuild_tensor, (pickle.PickleBuffer(raw), str(obj.dtype).removeprefix("torch."),
                            tuple(obj.shape), obj.requires_grad, str(obj.device),
                            cls is torch.nn.Parameter)


def rebuild_tensor(buffer: Any, dtype: str, shape: tuple[int, ...], requires_grad: bool,
                   device: str, parameter: bool) -> Any:
    """Inverse of ``reduce_tensor``: zero-copy on CPU when the buffer is writable."""
    import torch

    view = memoryview(buffer).cast("B")
    if view.readonly:  # in-band (bytes) or a read-only store mapping: torch needs writable
        view = memoryview(bytearray(view))
    if view.nbytes:
        flat = torch.frombuffer(view, dtype=torch.uint8)
    else:
        flat = torch.empty(0, dtype=torch.uint8)
    tensor = flat.view(getattr(torch, dtype)).reshape(shape)
    target = _target(device)
    if target != "cpu":
        tensor = tensor.to(target)
    if parameter:
        return torch.nn.Parameter(tensor, requires_grad=requires_grad)
    return tensor.requires_grad_(requires_grad) if requires_grad else tensor


def _target(original: str) -> str:
    import torch

    policy = _policy.get()
    if policy == "cpu":
        return "cpu"
    wanted = original if policy == "keep" else policy
    kind = wanted.split(":")[0]
    if kind == "cpu":
        return "cpu"
    if kind == "cuda":
        available = torch.cuda.is_available()
        if available and ":" in wanted and int(wanted.split(":")[1]) >= torch.cuda.device_count():
            available = False
    else:
        backend = getattr(torch.backends, kind, None) or getattr(torch, kind, None)
        available = bool(backend and getattr(backend, "is_available", lambda: False)())
    if available:
        return wanted
    if policy == "keep":
        return "cpu"  # it was on a device this machine does not have
    raise RuntimeError(f"tensors were asked onto {wanted!r} (result_device), but this machine "
                       f"has no such device; use result_device='cpu' or 'keep'")
