"""ALFWorld leaves NumPy's global RNG alone, also when TextWorld is first imported mid-run (a cache miss)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("textworld")

REPO = Path(__file__).resolve().parents[3]
HANDMADE = Path(__file__).resolve().parents[2] / "data" / "alfworld" / "clean_apple_in_fridge.tw-pddl"

# A fresh interpreter, so that TextWorld is not imported yet: this is the first job of a worker process.
SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np

    def digest():
        kind, keys, pos, *_ = np.random.get_state()
        return hashlib.sha256(keys.tobytes() + str(pos).encode()).hexdigest()

    np.random.seed(123)
    start = digest()
    from derl_gym.envs.alfworld.engine import TransitionCache
    from derl_gym.envs.alfworld.env import ALFWorldEnv
    assert "textworld" not in sys.modules, "the env module imported TextWorld eagerly"
    env = ALFWorldEnv(games=[sys.argv[1]], cache=TransitionCache(folder=sys.argv[2]))  # empty disk cache: misses
    obs, info = env.reset(seed=0)
    for command in list(env.walkthrough)[:4]:
        env.step(command)
    after_env = digest()
    from derl_gym.envs.alfworld.solver import make_pddl_env
    make_pddl_env(policy=True)
    print(json.dumps({"imported": "textworld" in sys.modules, "unchanged": start == after_env == digest(),
                      "draw": float(np.random.random())}))
""")


def test_first_textworld_import_and_cache_misses_do_not_draw_from_numpys_global_rng(tmp_path):
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(HANDMADE), str(tmp_path / "transitions")],
                         cwd=REPO, capture_output=True, text=True, timeout=240,
                         env={"PYTHONPATH": str(REPO), "DERL_GYM_CACHE": str(tmp_path / "cache"),
                              "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = __import__("json").loads(run.stdout.strip().splitlines()[-1])
    assert report["imported"], "TextWorld was never imported: the test did not exercise the cache-miss path"
    assert report["unchanged"]
    np.random.seed(123)
    assert report["draw"] == float(np.random.random())  # the global stream continues where the seed left it


def test_import_textworld_restores_the_state_it_found(monkeypatch):
    from derl_gym.envs.alfworld import textworld_import

    monkeypatch.delitem(sys.modules, "textworld", raising=False)
    imported: list[str] = []

    def fake_import(name, *args, **kwargs):  # stands in for TextWorld's import-time np.random.randint
        if name == "textworld":
            imported.append(name)
            np.random.randint(65635)
            module = type(sys)("textworld")
            sys.modules["textworld"] = module
            return module
        return real_import(name, *args, **kwargs)

    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", fake_import)
    np.random.seed(5)
    expected = np.random.get_state()[1].copy()
    module = textworld_import.import_textworld()
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert imported == ["textworld"] and module is sys.modules["textworld"]
    assert np.array_equal(np.random.get_state()[1], expected)
    assert textworld_import.import_textworld() is module and imported == ["textworld"]  # once per process
    monkeypatch.delitem(sys.modules, "textworld")
