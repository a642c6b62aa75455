"""Meta-optimizer state holds no pickle: safe encodings, exact round trips, crafted pickles refused."""

from __future__ import annotations

import base64
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from derl_gym.agents.meta import make_optimizer
from derl_gym.agents.meta.safe_state import (
    UnsafeStateError,
    decode_optimizer_state,
    decode_tensors,
    encode_optimizer_state,
    encode_tensors,
)
from derl_gym.runtime.evolve import run_evolution
from derl_gym.runtime.runners import InlineRunner
from derl_gym.runtime.standin import standin_inner, standin_spec
from derl_gym.runtime.store import ResultStore

K = 4
PACKAGE = Path(__file__).resolve().parents[2] / "derl_gym"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _MakesMarker:
    """Unpickling this creates ``path`` (``builtins.open(path, "w")``): proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_b64(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(_MakesMarker(marker))).decode("ascii")


def test_the_crafted_pickle_really_runs_code_when_unpickled(tmp_path):
    """The payload used below is live: plain pickle.loads would create the marker file."""
    marker = tmp_path / "control"
    pickle.loads(base64.b64decode(_pickle_b64(marker)))
    assert marker.exists()


def test_tensor_and_adam_state_round_trip_exactly():
    torch.manual_seed(0)
    model = torch.nn.GRU(3, 5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    model(torch.randn(4, 2, 3))[0].sum().backward()
    opt.step()
    blob = json.loads(json.dumps(encode_tensors(model.state_dict())))
    back = decode_tensors(blob)
    assert back.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(back[name], tensor)
    state = decode_optimizer_state(json.loads(json.dumps(encode_optimizer_state(opt.state_dict()))))
    want = opt.state_dict()
    assert state["param_groups"] == want["param_groups"]
    assert state["param_groups"][0]["betas"] == (0.8, 0.95)  # tuples come back as tuples
    for pid, entry in want["state"].items():
        assert entry.keys() == state["state"][pid].keys()
        for name, value in entry.items():
            assert torch.equal(state["state"][pid][name], value)
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("key", ["policy", "reference", "optimizer"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_derl_refuses_a_pickle_in_place_of_its_weights(tmp_path, key, wrapped):
    marker = tmp_path / f"ran-{key}-{wrapped}"
    opt = make_optimizer("derl", K, seed=0)
    formulas = opt.propose(4)
    opt.update(formulas, [0.1, 0.5, 0.2, 0.9])
    state = json.loads(json.dumps(opt.state_dict()))
    payload = _pickle_b64(marker)
    if not wrapped:  # the old format: a bare base64 pickle
        state["extra"][key] = payload
    elif key == "optimizer":  # the new format's shape, with a pickle where the safetensors buffer goes
        state["extra"][key]["tensors"]["data"] = payload
    else:
        state["extra"][key]["data"] = payload
    other = make_optimizer("derl", K, seed=1)
    before = {n: p.detach().clone() for n, p in other.policy.named_parameters()}
    with pytest.raises(ValueError, match=rf"\['{key}'\].*not in the safe format") as info:
        other.load_state_dict(state)
    assert isinstance(info.value, UnsafeStateError)
    assert not marker.exists()
    for name, param in other.policy.named_parameters():  # nothing half-loaded
        assert torch.equal(param, before[name])


def test_cmaes_refuses_a_pickled_strategy(tmp_path):
    marker = tmp_path / "ran-cmaes"
    opt = make_optimizer("cmaes", K, seed=0)
    formulas = opt.propose(4)
    opt.update(formulas, [0.1, 0.2, 0.3, 0.4])
    state = json.loads(json.dumps(opt.state_dict()))
    assert isinstance(state["extra"]["es"]["events"], list)  # history as numbers, not a blob
    state["extra"]["es"] = _pickle_b64(marker)
    with pytest.raises(ValueError, match=r"\['es'\] is not in the safe format"):
        make_optimizer("cmaes", K, seed=0).load_state_dict(state)
    assert not marker.exists()


def test_decode_rejects_garbage_with_the_location():
    with pytest.raises(UnsafeStateError, match="where-it-was.*not in the safe format"):
        decode_tensors({"format": "safetensors", "data": base64.b64encode(b"\x00" * 16).decode()}, where="where-it-was")
    with pytest.raises(UnsafeStateError, match="not base64"):
        decode_tensors({"format": "safetensors", "data": "!!!"})
    with pytest.raises(UnsafeStateError, match="format"):
        decode_optimizer_state({"format": "pickle"})


def test_resuming_a_tampered_checkpoint_through_the_store_is_refused(tmp_path):
    """A checkpoint row whose weights were replaced by a pickle: run_evolution refuses, runs no code."""
    spec, runner = standin_spec(), InlineRunner(job_fn=standin_inner)
    marker = tmp_path / "ran-store"
    with ResultStore(tmp_path / "run") as store:
        run_evolution(spec, make_optimizer("derl", K, seed=0), runner, store, 1, 4, seed=0)
        cp = store.latest_checkpoint("derl")
        state = cp["state"]
        state["extra"]["policy"] = _pickle_b64(marker)
        store.save_checkpoint("derl", cp["iteration"], state, expressions=cp["expressions"],
                              canonicals=cp["canonicals"], scores=cp["scores"], statuses=cp["statuses"],
                              cached=cp["cached"], stats=cp["stats"])
    with ResultStore(tmp_path / "run") as store:
        with pytest.raises(ValueError, match=r"cannot resume 'derl' from its checkpoint of iteration 1 .*"
                                             r"\['policy'\].*not in the safe format"):
            run_evolution(spec, make_optimizer("derl", K, seed=0), runner, store, 2, 4, seed=0)
        with pytest.raises(UnsafeStateError):  # and directly from the stored row
            make_optimizer("derl", K, seed=0).load_state_dict(store.latest_checkpoint("derl")["state"])
    assert not marker.exists()


def test_no_pickle_reader_in_the_package():
    """No module of derl_gym unpickles or calls torch.load with weights_only=False."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"pickle\.loads?\(|weights_only\s*=\s*False|import pickle|from pickle", text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_resume_trains_with_the_constructor_lr_and_says_what_changed(caplog):
    import logging

    from derl_gym.agents.meta import make_optimizer

    saved = make_optimizer("derl", 4, seed=0, cold_start=False)  # lr 1e-3
    resumed = make_optimizer("derl", 4, seed=0, cold_start=False, lr=3e-3)
    with caplog.at_level(logging.WARNING):
        resumed.load_state_dict(saved.state_dict())
    assert resumed.lr == 3e-3
    assert all(group["lr"] == 3e-3 for group in resumed.optimizer.param_groups)
    assert "lr 0.001 -> 0.003" in caplog.text


def test_a_safetensors_buffer_whose_header_length_starts_with_0x80_round_trips():
    """A valid buffer whose header length has low byte 0x80 (e.g. 384) is not mistaken for a pickle.

    Such buffers start with pickle's PROTO byte; Adam's state for one ``Linear(2, 1)`` is one.
    """
    for width in range(1, 200):
        tensors = {"w" * width: torch.arange(3.0)}
        blob = encode_tensors(tensors)
        if base64.b64decode(blob["data"])[:1] == b"\x80":
            break
    else:  # pragma: no cover - the header length grows by one per name character
        pytest.fail("no name length gave a header length with low byte 0x80")
    assert torch.equal(decode_tensors(blob)["w" * width], tensors["w" * width])
    layer = torch.nn.Linear(2, 1)
    adam = torch.optim.Adam(layer.parameters(), lr=0.01)
    layer(torch.ones(1, 2)).sum().backward()
    adam.step()
    restored = decode_optimizer_state(encode_optimizer_state(adam.state_dict()))
    assert torch.equal(restored["state"][0]["exp_avg"], adam.state_dict()["state"][0]["exp_avg"])
