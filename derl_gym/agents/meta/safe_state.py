"""Safe, JSON-embeddable encodings of the binary parts of meta-optimizer state dicts.

A checkpoint is read back from a store that anyone with file access could have edited, so nothing
in it may run code when it is loaded: no :mod:`pickle`, no ``torch.load`` (whose ``weights_only``
mode is still a pickle reader). This module encodes

* **tensors** (a token policy's ``state_dict``) as a `safetensors <https://huggingface.co/docs/safetensors>`_
  buffer, base64 in a small tagged dict ``{"format": "safetensors", "data": "<base64>"}``;
  safetensors is a JSON header plus raw little-endian arrays, parsed without executing anything;
* **a torch optimizer's state dict** (Adam: per-parameter ``step``/``exp_avg``/``exp_avg_sq``
  tensors and ``param_groups`` of numbers, bools, ``None`` and tuples) as safetensors for every
  tensor plus plain JSON for everything else, with tuples tagged so they come back as tuples.
  Safetensors alone cannot hold the nested ints, tuples and ``None`` of ``param_groups``, and
  ``torch.load(weights_only=True)`` would keep a pickle reader in the load path; JSON for the
  small non-tensor part and safetensors for the tensors keeps both parts in formats that only
  hold data.

Decoding anything that is not in these formats (for instance a legacy base64 pickle, or a pickle
smuggled into the ``data`` field) raises :class:`UnsafeStateError`, a ``ValueError``, naming where
in the state dict the bad value is; the payload is never unpickled.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Mapping

#: ``format`` tag of an encoded tensor dict.
TENSORS_FORMAT = "safetensors"
#: ``format`` tag of an encoded torch optimizer state dict.
OPTIMIZER_FORMAT = "torch-optimizer/safetensors+json"
_TUPLE_TAG = "__tuple__"


class UnsafeStateError(ValueError):
    """A state-dict value is not in the safe format (safetensors / JSON); it was not loaded.

    Example:
        >>> from derl_gym.agents.meta.safe_state import UnsafeStateError, decode_tensors
        >>> try:
        ...     decode_tensors("gASVAAAA", where="policy weights")  # a bare base64 string: the old pickled format
        ... except UnsafeStateError as error:
        ...     print(str(error).split(";")[0])
        policy weights is not in the safe format (a bare base64 string, as the old pickled format wrote)
    """


def _refuse(where: str, why: str) -> UnsafeStateError:
    return UnsafeStateError(
        f"{where} is not in the safe format ({why}); it was not loaded. Meta-optimizer checkpoints hold "
        "torch weights as safetensors and everything else as JSON (no pickle); a checkpoint written by an "
        "older derl-gym (pickled state) or edited by hand cannot be resumed: start a new run directory")


def encode_tensors(tensors: Mapping[str, Any]) -> dict[str, str]:
    """Return ``tensors`` (name -> ``torch.Tensor``) as ``{"format": "safetensors", "data": base64}``.

    Tensors are moved to the CPU and made contiguous (safetensors stores raw contiguous buffers).

    Example:
        >>> import json, torch
        >>> from derl_gym.agents.meta.safe_state import decode_tensors, encode_tensors
        >>> blob = encode_tensors({"weight": torch.arange(6.0).reshape(2, 3)})
        >>> blob["format"], json.loads(json.dumps(blob)) == blob  # plain JSON data
        ('safetensors', True)
        >>> decode_tensors(blob)["weight"].tolist()
        [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    from safetensors.torch import save

    plain = {str(name): t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    return {"format": TENSORS_FORMAT, "data": base64.b64encode(save(plain)).decode("ascii")}


def decode_tensors(blob: Any, *, where: str = "tensor blob") -> dict[str, Any]:
    """Return the CPU tensors encoded by :func:`encode_tensors`; raises :class:`UnsafeStateError`
    (naming ``where``) when ``blob`` is anything else. Nothing in ``blob`` is executed.

    Example:
        >>> import torch
        >>> from derl_gym.agents.meta.safe_state import UnsafeStateError, decode_tensors, encode_tensors
        >>> decode_tensors(encode_tensors({"bias": torch.ones(2)}))["bias"].tolist()
        [1.0, 1.0]
        >>> decode_tensors({"format": "pickle", "data": ""})
        Traceback (most recent call last):
        ...
        derl_gym.agents.meta.safe_state.UnsafeStateError: tensor blob is not in the safe format (expected {'format': ...
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    if isinstance(blob, str):
        raise _refuse(where, "a bare base64 string, as the old pickled format wrote")
    if not isinstance(blob, Mapping) or blob.get("format") != TENSORS_FORMAT or not isinstance(blob.get("data"), str):
        raise _refuse(where, f"expected {{'format': {TENSORS_FORMAT!r}, 'data': <base64>}}, got "
                             f"{type(blob).__name__} {_preview(blob)}")
    try:
        data = base64.b64decode(blob["data"].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise _refuse(where, f"data is not base64: {exc}") from None
    try:  # parsing a safetensors buffer runs no code, whatever the bytes are
        return dict(load(data))
    except (SafetensorError, ValueError, TypeError, RuntimeError) as exc:
        # Name a pickle only once safetensors refused the bytes: a valid buffer whose 8-byte header
        # length has 0x80 as its low byte (e.g. 384) also starts with pickle's PROTO byte.
        if data[:1] == b"\x80":
            raise _refuse(where, "the data is a pickle, not a safetensors buffer") from None
        raise _refuse(where, f"safetensors cannot parse the data: {exc}") from None


def _to_json(value: Any, where: str) -> Any:
    """Return ``value`` as JSON data, tuples tagged; raises ``TypeError`` for anything else."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {_TUPLE_TAG: [_to_json(v, where) for v in value]}
    if isinstance(value, list):
        return [_to_json(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, where) for k, v in value.items()}
    raise TypeError(f"{where}: cannot store a {type(value).__name__} ({value!r}) as JSON; "
                    "optimizer state must be tensors, numbers, strings, bools, None, lists or tuples")


def _from_json(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_from_json(v, where) for v in value]
    if isinstance(value, Mapping):
        if set(value) == {_TUPLE_TAG}:
            return tuple(_from_json(v, where) for v in value[_TUPLE_TAG])
        if set(value) == {"__float__"}:
            return float(value["__float__"]) if value["__float__"] in ("inf", "-inf", "nan") else _bad_float(where)
        return {str(k): _from_json(v, where) for k, v in value.items()}
    raise _refuse(where, f"unexpected {type(value).__name__}")


def _bad_float(where: str) -> float:
    raise _refuse(where, "a tagged float that is not inf/-inf/nan")


def encode_optimizer_state(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Return a torch optimizer's ``state_dict()`` as JSON data: its tensors in one safetensors
    blob (keys ``"<param id>/<name>"``), its other per-parameter values and ``param_groups`` as JSON.

    Example:
        >>> import json, torch
        >>> from derl_gym.agents.meta.safe_state import encode_optimizer_state
        >>> layer = torch.nn.Linear(2, 1)
        >>> optimizer = torch.optim.Adam(layer.parameters(), lr=0.01)
        >>> layer(torch.ones(1, 2)).sum().backward(); optimizer.step()
        >>> blob = encode_optimizer_state(optimizer.state_dict())
        >>> blob["format"], blob["param_groups"][0]["lr"], len(json.dumps(blob)) > 0
        ('torch-optimizer/safetensors+json', 0.01, True)
    """
    import torch

    tensors: dict[str, Any] = {}
    values: dict[str, dict[str, Any]] = {}
    for pid, entry in state_dict.get("state", {}).items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{int(pid)}/{name}"] = value
            else:
                values.setdefault(str(int(pid)), {})[str(name)] = _to_json(value, f"optimizer state {pid}/{name}")
    return {"format": OPTIMIZER_FORMAT, "tensors": encode_tensors(tensors), "values": values,
            "param_groups": _to_json(list(state_dict.get("param_groups", [])), "optimizer param_groups")}


def decode_optimizer_state(blob: Any, *, where: str = "optimizer state") -> dict[str, Any]:
    """Return the optimizer state dict encoded by :func:`encode_optimizer_state` (CPU tensors;
    ``Optimizer.load_state_dict`` moves them to the parameters' device); raises
    :class:`UnsafeStateError` naming ``where`` when ``blob`` is in another format.

    Example:
        >>> import torch
        >>> from derl_gym.agents.meta.safe_state import decode_optimizer_state, encode_optimizer_state
        >>> layer = torch.nn.Linear(2, 1)
        >>> optimizer = torch.optim.Adam(layer.parameters(), lr=0.01)
        >>> layer(torch.ones(1, 2)).sum().backward(); optimizer.step()
        >>> restored = torch.optim.Adam(layer.parameters(), lr=0.5)
        >>> restored.load_state_dict(decode_optimizer_state(encode_optimizer_state(optimizer.state_dict())))
        >>> restored.param_groups[0]["lr"], torch.equal(restored.state[layer.weight]["exp_avg"], optimizer.state[layer.weight]["exp_avg"])
        (0.01, True)
    """
    if isinstance(blob, str):
        raise _refuse(where, "a bare base64 string, as the old pickled format wrote")
    if not isinstance(blob, Mapping) or blob.get("format") != OPTIMIZER_FORMAT:
        raise _refuse(where, f"expected a dict with format {OPTIMIZER_FORMAT!r}, got {type(blob).__name__} "
                             f"{_preview(blob)}")
    tensors = decode_tensors(blob.get("tensors"), where=f"{where}['tensors']")
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, tensor in tensors.items():
            pid, _, name = key.partition("/")
            state.setdefault(int(pid), {})[name] = tensor
        for pid, entry in dict(blob.get("values") or {}).items():
            for name, value in dict(entry).items():
                state.setdefault(int(pid), {})[str(name)] = _from_json(value, f"{where}['values']")
    except (TypeError, ValueError) as exc:
        if isinstance(exc, UnsafeStateError):
            raise
        raise _refuse(where, f"malformed parameter entry: {exc}") from None
    groups = _from_json(blob.get("param_groups") or [], f"{where}['param_groups']")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise _refuse(where, "param_groups must be a list of dicts")
    for group in groups:
        group["params"] = [int(p) for p in group.get("params", [])]
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def _preview(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
