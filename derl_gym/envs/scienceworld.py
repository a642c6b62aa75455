"""ScienceWorld (Wang et al., 2022) as a Gymnasium text env on the real simulator.

The ``scienceworld`` wheel ships the Scala simulator as a jar; this module starts it in its own
Java process (one JVM per env, through a py4j gateway), talks to it directly, and turns it into
``derl_gym/ScienceWorld-v0``:

- observation: text = task description, the simulator's feedback to the last action, the
  ``look around`` text and the inventory (``spaces.Text``, printable charset, bounded length);
- action: free text (``spaces.Text``); bad strings get the simulator's feedback, never an exception;
- reward: the *task* reward, 1.0 on the step that completes the task (score 100), else 0.0;
  a negative score (the task failed, e.g. focusing on the wrong object) ends the episode;
- ``info``: ``admissible_commands``, ``score``, ``won``, ``failed``, ``valid_action``,
  ``state_changed``, ``progress``, ``score_delta``, ``feedback``, ``task``, ``variation``, ``step``.

Splits (see :func:`split_episodes`): L0 trains and tests on the simulator's *train* variations,
L1 tests on its *test* variations (unseen instances), L2 holds out whole tasks
(:data:`L2_HELD_OUT_TASKS`, the Electricity topic). ``validation`` is a deterministic 20% of the
train variations and is never trained on.

Vector envs: works in ``gymnasium.vector.AsyncVectorEnv`` (pass ``shared_memory=False``: gymnasium
reads ``Text`` observations out of shared memory once, when the vector env is created, so text
must travel through the pipes) and in SB3's ``SubprocVecEnv``; each worker runs its own JVM.

JVM lifecycle: the JVM starts on the first ``reset()``, ``close()`` ends it and waits for the
process to exit, a ``weakref.finalize`` ends it when the env is garbage-collected or the
interpreter exits, and the JVM is started with py4j's ``--die-on-broken-pipe`` so that it also
exits when its parent process is killed (e.g. a terminated vector-env worker). A JVM that died
is detected; the episode in progress is truncated and the next ``reset()`` starts a new one.
"""

from __future__ import annotations

import logging
import os
import string
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from derl_gym.rewards.primitives import (
    PrimitiveSet,
    StepScorer,
    segment_primitives,
    success_primitive,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- task table

#: (task id, topic, title, simulator task name) for the 30 ScienceWorld tasks, in the paper's order.
TASKS: tuple[tuple[str, str, str, str], ...] = (
    ("1-1", "Matter", "Changes of State (Boiling)", "boil"),
    ("1-2", "Matter", "Changes of State (Melting)", "melt"),
    ("1-3", "Matter", "Changes of State (Freezing)", "freeze"),
    ("1-4", "Matter", "Changes of State (Any)", "change-the-state-of-matter-of"),
    ("2-1", "Measurement", "Use Thermometer", "use-thermometer"),
    ("2-2", "Measurement", "Measuring Boiling Point (known)", "measure-melting-point-known-substance"),
    ("2-3", "Measurement", "Measuring Boiling Point (unknown)", "measure-melting-point-unknown-substance"),
    ("3-1", "Electricity", "Create a circuit", "power-component"),
    ("3-2", "Electricity", "Renewable vs Non-renewable Energy", "power-component-renewable-vs-nonrenewable-energy"),
    ("3-3", "Electricity", "Test Conductivity (known)", "test-conductivity"),
    ("3-4", "Electricity", "Test Conductivity (unknown)", "test-conductivity-of-unknown-substances"),
    ("4-1", "Classification", "Find a living thing", "find-living-thing"),
    ("4-2", "Classification", "Find a non-living thing", "find-non-living-thing"),
    ("4-3", "Classification", "Find a plant", "find-plant"),
    ("4-4", "Classification", "Find an animal", "find-animal"),
    ("5-1", "Biology", "Grow a plant", "grow-plant"),
    ("5-2", "Biology", "Grow a fruit", "grow-fruit"),
    ("6-1", "Chemistry", "Mixing (generic)", "chemistry-mix"),
    ("6-2", "Chemistry", "Mixing paints (secondary colours)", "chemistry-mix-paint-secondary-color"),
    ("6-3", "Chemistry", "Mixing paints (tertiary colours)", "chemistry-mix-paint-tertiary-color"),
    ("7-1", "Biology", "Identify longest-lived animal", "lifespan-longest-lived"),
    ("7-2", "Biology", "Identify shortest-lived animal", "lifespan-shortest-lived"),
    ("7-3", "Biology", "Identify longest-then-shortest-lived animal", "lifespan-longest-lived-then-shortest-lived"),
    ("8-1", "Biology", "Identify life stages (plant)", "identify-life-stages-1"),
    ("8-2", "Biology", "Identify life stages (animal)", "identify-life-stages-2"),
    ("9-1", "Forces", "Inclined Planes (determine angle)", "inclined-plane-determine-angle"),
    ("9-2", "Forces", "Friction (known surfaces)", "inclined-plane-friction-named-surfaces"),
    ("9-3", "Forces", "Friction (unknown surfaces)", "inclined-plane-friction-unnamed-surfaces"),
    ("10-1", "Biology", "Mendelian Genetics (known plants)", "mendelian-genetics-known-plant"),
    ("10-2", "Biology", "Mendelian Genetics (unknown plants)", "mendelian-genetics-unknown-plant"),
)

#: The simulator's own variation split per task (scienceworld 1.2.3, read from the JVM with
#: ``getVariationsTrain/Dev/Test``): ``(train_end, dev_end, num_variations)`` meaning train =
#: ``range(0, train_end)``, dev = ``range(train_end, dev_end)``, test = ``range(dev_end, num)``.
#: ``tests/envs/test_scienceworld.py`` checks the table against the simulator.
VARIATION_SPLITS: dict[str, tuple[int, int, int]] = {
    "boil": (14, 21, 30),
    "change-the-state-of-matter-of": (14, 21, 30),
    "chemistry-mix": (16, 24, 32),
    "chemistry-mix-paint-secondary-color": (18, 27, 36),
    "chemistry-mix-paint-tertiary-color": (18, 27, 36),
    "find-animal": (150, 225, 300),
    "find-living-thing": (150, 225, 300),
    "find-non-living-thing": (150, 225, 300),
    "find-plant": (150, 225, 300),
    "freeze": (14, 21, 30),
    "grow-fruit": (62, 93, 126),
    "grow-plant": (62, 93, 126),
    "identify-life-stages-1": (6, 9, 14),
    "identify-life-stages-2": (4, 6, 10),
    "inclined-plane-determine-angle": (84, 126, 168),
    "inclined-plane-friction-named-surfaces": (692, 1038, 1386),
    "inclined-plane-friction-unnamed-surfaces": (80, 120, 162),
    "lifespan-longest-lived": (62, 93, 125),
    "lifespan-longest-lived-then-shortest-lived": (62, 93, 125),
    "lifespan-shortest-lived": (62, 93, 125),
    "measure-melting-point-known-substance": (218, 327, 436),
    "measure-melting-point-unknown-substance": (150, 225, 300),
    "melt": (14, 21, 30),
    "mendelian-genetics-known-plant": (60, 90, 120),
    "mendelian-genetics-unknown-plant": (240, 360, 480),
    "power-component": (10, 15, 20),
    "power-component-renewable-vs-nonrenewable-energy": (10, 15, 20),
    "test-conductivity": (450, 675, 900),
    "test-conductivity-of-unknown-substances": (300, 450, 600),
    "use-thermometer": (270, 405, 540),
}

#: L2 (out of distribution) holds out one whole topic group, as RLVMR holds out task categories:
#: the Electricity tasks (3-1 .. 3-4). They need actions (``connect X to Y``) and concepts (circuits,
#: conductivity) that no training task uses. Train/validation at L2 use the other 26 tasks.
L2_HELD_OUT_TOPIC = "Electricity"
L2_HELD_OUT_TASKS: tuple[str, ...] = tuple(t[3] for t in TASKS if t[1] == L2_HELD_OUT_TOPIC)

LEVELS = ("L0", "L1", "L2")
SPLITS = ("train", "validation", "test")

#: Every 5th train variation (positions 4, 9, 14 ... of the sorted train list) is validation.
VALIDATION_EVERY = 5

#: Commands removed from ``admissible_commands``: ``reset task`` clears the score and the focus,
#: which would let an agent farm score increases (the ``progress`` primitives).
EXCLUDED_COMMANDS = frozenset({"reset task"})

#: Feedback prefixes that mean the simulator did not understand the action.
INVALID_FEEDBACK = ("No known action matches that input", "Unknown action", "Ambiguous request")
AMBIGUOUS_FEEDBACK = "Ambiguous request"

CHARSET = string.printable
_CHARSET_SET = frozenset(CHARSET)
DEFAULT_JAVA_OPTIONS: tuple[str, ...] = ("-XX:+UseSerialGC",)


def task_names() -> list[str]:
    """Return the 30 simulator task names in the paper's order (index ``i`` = ``TASKS[i]``)."""
    return [t[3] for t in TASKS]


def resolve_task(task: str | int) -> str:
    """Return the simulator task name for a name, a paper id (``"4-1"``), a title or an index.

    Raises ``ValueError`` naming the bad value and listing the valid names.
    """
    names = task_names()
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if 0 <= int(task) < len(names):
            return names[int(task)]
        raise ValueError(f"task index {task} is out of range; use 0..{len(names) - 1} or a name from {names}")
    if isinstance(task, str):
        key = task.strip()
        for task_id, topic, title, name in TASKS:
            if key in (name, task_id, title, f"{topic} {title}", f"task-{task_id}-{name}"):
                return name
    raise ValueError(f"unknown ScienceWorld task {task!r}; use an index 0..{len(names) - 1}, "
                     f"an id such as '4-1', or one of {names}")


def _check_level_split(level: str, split: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_tasks(level: str = "L0", split: str = "train") -> list[str]:
    """Return the task names a (level, split) draws from.

    L0 and L1 use all 30 tasks for every split; L2 trains and validates on the tasks outside
    :data:`L2_HELD_OUT_TASKS` and tests on the held-out ones.
    """
    _check_level_split(level, split)
    names = task_names()
    if level != "L2":
        return names
    if split == "test":
        return [n for n in names if n in L2_HELD_OUT_TASKS]
    return [n for n in names if n not in L2_HELD_OUT_TASKS]


def split_variations(task: str | int, split: str = "train", level: str = "L0") -> list[int]:
    """Return the sorted variation indices of ``task`` in a (level, split).

    - ``train``: the simulator's train variations minus the validation ones (all levels);
    - ``validation``: every 5th train variation (a deterministic 20%, at least one);
    - ``test``: L0 = the training variations (seen instances), L1 and L2 = the simulator's test
      variations (unseen instances; at L2 of the held-out tasks).

    Raises ``ValueError`` when the task does not belong to the level's split (L2 held-out tasks
    cannot be trained on, and only they are tested).
    """
    _check_level_split(level, split)
    name = resolve_task(task)
    if name not in split_tasks(level, split):
        where = "test split only" if name in L2_HELD_OUT_TASKS else "train/validation splits only"
        raise ValueError(f"task {name!r} is in the L2 {where}; held-out L2 tasks are {list(L2_HELD_OUT_TASKS)}")
    train_end, dev_end, total = VARIATION_SPLITS[name]
    sim_train = list(range(0, train_end))
    validation = [v for i, v in enumerate(sim_train) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    if not validation:
        validation = sim_train[-1:]
    training = [v for v in sim_train if v not in set(validation)]
    if split == "train":
        return training
    if split == "validation":
        return validation
    if level == "L0":
        return training
    return list(range(dev_end, total))


def split_episodes(task: str | int | Sequence[str | int] | None = None, split: str = "train",
                   level: str = "L0") -> list[tuple[str, int]]:
    """Return the ``(task name, variation)`` pairs of a (level, split), task by task.

    ``task=None`` takes every task of the level's split (:func:`split_tasks`); a name, id, index
    or a sequence of them restricts it.
    """
    _check_level_split(level, split)
    if task is None:
        tasks = split_tasks(level, split)
    elif isinstance(task, (str, int, np.integer)):
        tasks = [resolve_task(task)]
    else:
        tasks = list(dict.fromkeys(resolve_task(t) for t in task))
        if not tasks:
            raise ValueError("task must be None, a task, or a non-empty sequence of tasks; got an empty sequence")
    return [(name, v) for name in tasks for v in split_variations(name, split, level)]


# --------------------------------------------------------------------------- JVM process

def _stop_jvm(gateway: Any, proc: Any, timeout: float = 5.0) -> None:
    """Close the py4j connection and end the Java process, waiting for it to exit."""
    client = getattr(gateway, "_gateway_client", None)
    try:
        if client is not None:
            # Python-side garbage collection of Java references must not try to reach a dead JVM.
            client.is_connected = False
            client.close()
    except Exception:  # noqa: BLE001  (best effort: the JVM may already be gone)
        pass
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except Exception:  # noqa: BLE001  (TimeoutExpired: escalate)
                proc.kill()
                proc.wait(timeout)
    except Exception:  # noqa: BLE001
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except Exception:  # noqa: BLE001
            pass


class ScienceWorldJVM:
    """One ScienceWorld simulator in its own Java process, reached through a py4j gateway.

    ``server`` is the simulator's ``PythonInterface``. ``close()`` (also run by a
    ``weakref.finalize`` on garbage collection and at interpreter exit) ends the process and waits
    for it. ``start_seconds`` is how long the JVM took to start.
    """

    def __init__(self, java_options: Sequence[str] = DEFAULT_JAVA_OPTIONS) -> None:
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from scienceworld.constants import BASEPATH, JAR_PATH

        start = time.perf_counter()
        port, proc = launch_gateway(classpath=JAR_PATH, die_on_exit=True, cwd=BASEPATH, return_proc=True,
                                    javaopts=list(java_options))
        gateway = JavaGateway(gateway_parameters=GatewayParameters(port=port, auto_field=True, auto_close=True),
                              java_process=proc)
        self._finalizer = weakref.finalize(self, _stop_jvm, gateway, proc)
        try:
            self.server = gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()
        except BaseException:
            self._finalizer()
            raise
        self._gateway = gateway
        self._proc = proc
        self.start_seconds = time.perf_counter() - start
        logger.debug("ScienceWorld JVM pid %d started on port %d in %.2fs", proc.pid, port, self.start_seconds)

    @property
    def pid(self) -> int:
        """The Java process id."""
        return int(self._proc.pid)

    @property
    def returncode(self) -> int | None:
        """The Java process exit code, or None while it runs."""
        return self._proc.poll()

    def alive(self) -> bool:
        """Return True while the Java process runs and has not been closed.

        ``Popen.poll()`` alone is not enough: while py4j's watcher thread sits in ``wait()`` on the
        process, ``poll()`` from another thread answers None even for a dead one, so on Linux the
        process state is read from ``/proc`` as well (a zombie counts as dead).
        """
        if not self._finalizer.alive or self._proc.poll() is not None:
            return False
        try:
            with open(f"/proc/{self._proc.pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return not os.path.isdir("/proc/self")
        except (OSError, IndexError):
            return True
        return state not in ("Z", "X")

    def close(self) -> None:
        """End the Java process and wait for it to exit (idempotent)."""
        self._finalizer()


# --------------------------------------------------------------------------- env


@dataclass
class _Episode:
    task: str
    variation: int
    task_description: str = ""
    look: str = ""
    inventory: str = ""
    score: int = 0
    steps: int = 0
    done: bool = False
    observation: str = ""
    commands: list[str] | None = None  # admissible commands of the current state, once computed


def normalize_text(text: str, max_length: int) -> str:
    """Return ``text`` with characters outside :data:`CHARSET` replaced by ``?`` and cut to ``max_length``."""
    if any(ch not in _CHARSET_SET for ch in text):
        text = "".join(ch if ch in _CHARSET_SET else "?" for ch in text)
    if len(text) > max_length:
        text = text[: max_length - 3] + "..." if max_length >= 3 else text[:max_length]
    return text


def bound_commands(commands: Iterable[str], max_commands: int | None) -> list[str]:
    """Return the sorted, deduplicated ``commands`` without :data:`EXCLUDED_COMMANDS`, at most ``max_commands``.

    When there are too many, commands are taken round-robin over their verbs (first word, in
    sorted order) so that every kind of action stays represented; the result is sorted.
    """
    unique = sorted({c.strip() for c in commands if c and c.strip()} - EXCLUDED_COMMANDS)
    if max_commands is None or len(unique) <= max_commands:
        return unique
    groups: dict[str, list[str]] = {}
    for command in unique:
        groups.setdefault(command.split(" ", 1)[0], []).append(command)
    chosen: list[str] = []
    depth = 0
    while len(chosen) < max_commands:
        for verb in sorted(groups):
            if depth < len(groups[verb]):
                chosen.append(groups[verb][depth])
                if len(chosen) == max_commands:
                    break
        depth += 1
    return sorted(chosen)


class ScienceWorldEnv(gym.Env[str, str]):
    """ScienceWorld on the real simulator (``derl_gym/ScienceWorld-v0``); text in, text out.

    Args:
        task: a task name (``"find-living-thing"``), paper id (``"4-1"``), index into
            :data:`TASKS`, a sequence of them, or ``None`` for every task of the level's split.
        split: ``"train"``, ``"validation"`` or ``"test"`` (see :func:`split_variations`).
        level: ``"L0"``, ``"L1"`` or ``"L2"``.
        simplification: the simulator's simplification string (``"easy"`` = teleport, open doors
            and containers, self-watering pots, no electrical actions where the task allows).
        max_episode_steps: the episode is truncated after this many steps.
        max_admissible: bound on ``info["admissible_commands"]`` (see :func:`bound_commands`);
            ``None`` = no bound.
        seed: seeds the order in which episodes (task, variation) are drawn.
        admissible: compute ``info["admissible_commands"]`` on every step (the simulator spends
            most of a step's time on it). ``False`` puts an empty list there; call
            :meth:`admissible_commands` when you need it.
        resolve_ambiguous: when the simulator asks which of several same-named objects was meant,
            answer ``0`` (the first) so every admissible command acts in one step.
        max_observation_length / max_action_length: the ``spaces.Text`` bounds; longer
            observations are cut, longer actions are cut before they reach the simulator.
        java_options: extra JVM options.

    Reward: 1.0 on the step where the score reaches 100 (``info["won"]``), else 0.0 (also on
    steps taken after the episode ended). ``info["progress"]``
    is 1.0 when the score rose this step, else 0.0 (``info["score_delta"]`` has the signed change / 100).
    ``info["score"]`` is the simulator's score clipped to [0, 100]; a negative raw score means the task
    failed (``info["failed"]``) and terminates the episode with reward 0.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, task: str | int | Sequence[str | int] | None = None, split: str = "train",
                 level: str = "L0", simplification: str = "easy", max_episode_steps: int = 100,
                 max_admissible: int | None = 256, seed: int | None = None, admissible: bool = True,
                 resolve_ambiguous: bool = True, max_observation_length: int = 16384,
                 max_action_length: int = 1024, java_options: Sequence[str] = DEFAULT_JAVA_OPTIONS,
                 render_mode: str | None = None) -> None:
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if max_admissible is not None and max_admissible < 1:
            raise ValueError(f"max_admissible must be >= 1 or None, got {max_admissible}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        allowed = {"", "easy", "teleportAction", "selfWateringFlowerPots", "openContainers", "openDoors",
                   "noElectricalAction"}
        bad = [s for s in simplification.split(",") if s not in allowed]
        if bad:
            raise ValueError(f"unknown simplification(s) {bad} in {simplification!r}; use a comma-separated "
                             f"subset of {sorted(allowed - {''})}")
        self.episodes = split_episodes(task, split, level)
        electrical = sorted({t for t, _ in self.episodes if "power-component" in t or "conductivity" in t})
        if electrical and "noElectricalAction" in simplification.split(","):
            raise ValueError(f"simplification 'noElectricalAction' removes the actions that tasks {electrical} "
                             "need; use 'easy' (which keeps them for these tasks) or drop that simplification")
        self.task = task
        self.split = split
        self.level = level
        self.simplification = simplification
        self.max_episode_steps = int(max_episode_steps)
        self.max_admissible = max_admissible
        self.admissible = bool(admissible)
        self.resolve_ambiguous = bool(resolve_ambiguous)
        self.java_options = tuple(java_options)
        self.render_mode = render_mode
        self.observation_space = spaces.Text(max_length=max_observation_length, min_length=0, charset=CHARSET)
        self.action_space = spaces.Text(max_length=max_action_length, min_length=0, charset=CHARSET)
        self._seed = seed
        self._order: list[int] = []
        self._cursor = 0
        self._jvm: ScienceWorldJVM | None = None
        self._episode: _Episode | None = None
        self._info: dict[str, Any] = {}
        self.jvm_restarts = 0

    # ------------------------------------------------------------------ JVM

    @property
    def primitives(self) -> PrimitiveSet:
        """The env's default primitive set, ``scienceworld_primitives()``: what ``MetaRewardWrapper(env, expr)`` uses.

        g1 ``success`` (score 100, ``info["won"]``), g2/g3/g4 ``progress_first``/``_middle``/``_last``
        (mean of ``info["progress"]``, the score rose, over each third of the trajectory). A new set
        on each access; for another one pass ``primitives=`` to the wrapper (e.g.
        ``scienceworld_primitives("valid")``).
        """
        return scienceworld_primitives()

    @property
    def java_pid(self) -> int | None:
        """The pid of this env's Java process, or None before the first reset / after close."""
        return self._jvm.pid if self._jvm is not None and self._jvm.alive() else None

    def _ensure_jvm(self) -> ScienceWorldJVM:
        if self._jvm is not None and not self._jvm.alive():
            logger.warning("ScienceWorld JVM (pid %d) died (exit code %s); starting a new one",
                           self._jvm.pid, self._jvm.returncode)
            self._jvm.close()
            self._jvm = None
            self.jvm_restarts += 1
        if self._jvm is None:
            self._jvm = ScienceWorldJVM(self.java_options)
        return self._jvm

    def close(self) -> None:
        """End the simulator's Java process and wait for it to exit (the env can be reset again)."""
        if self._jvm is not None:
            self._jvm.close()
            self._jvm = None
        self._episode = None
        super().close()

    # ------------------------------------------------------------------ episodes

    def _next_episode(self) -> tuple[str, int]:
        if self._cursor >= len(self._order):
            self._order = [int(i) for i in self.np_random.permutation(len(self.episodes))]
            self._cursor = 0
        index = self._order[self._cursor]
        self._cursor += 1
        return self.episodes[index]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Load the next (task, variation) of the split and return ``(observation, info)``.

        Episodes are drawn in a shuffled order that cycles through the whole split; ``seed`` (or
        the constructor's seed, on the first reset) reshuffles it deterministically. ``options``
        may name ``task`` and ``variation`` explicitly (any variation of the simulator) and set
        ``gold_path=True`` to get the simulator's walkthrough in ``info["gold_actions"]``.
        """
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None
        super().reset(seed=seed)
        if seed is not None:
            self._order, self._cursor = [], 0
        options = dict(options or {})
        if "task" in options or "variation" in options:
            name = resolve_task(options.get("task", self.episodes[0][0]))
            variation = int(options.get("variation", 0))
            total = VARIATION_SPLITS[name][2]
            if not 0 <= variation < total:
                raise ValueError(f"variation {variation} of task {name!r} is out of range 0..{total - 1}")
        else:
            name, variation = self._next_episode()
        gold = bool(options.get("gold_path", False))
        from py4j.protocol import Py4JError, Py4JJavaError

        for attempt in range(2):
            jvm = self._ensure_jvm()
            try:
                jvm.server.load(name, variation, self.simplification, gold)
                # The score is only refreshed by a step; like the upstream reset, take a first look.
                jvm.server.step("look around")
                break
            except Py4JJavaError:
                raise
            except Py4JError as error:  # the connection broke: the JVM is gone or unusable
                if attempt:
                    raise RuntimeError(f"the ScienceWorld JVM failed twice while loading {name!r} "
                                       f"variation {variation}: {error}") from error
                logger.warning("ScienceWorld JVM (pid %d) stopped answering (%s); restarting it", jvm.pid, error)
                jvm.close()
        server = jvm.server
        episode = _Episode(task=name, variation=variation)
        episode.task_description = server.freeActionTaskDesc().strip()
        episode.look = server.freeActionLook().strip()
        episode.inventory = server.freeActionInventory().strip()
        episode.score = int(round(100 * server.getScore()))
        self._episode = episode
        episode.observation = self._observation(episode, None)
        info = self._make_info(episode, feedback=episode.look, valid=True, changed=False, progress=0.0,
                               delta=0.0, raw_score=episode.score)
        if gold:
            info["gold_actions"] = [str(a) for a in server.getGoldActionSequence()]
        self._info = info
        return episode.observation, info

    def _observation(self, episode: _Episode, feedback: str | None) -> str:
        parts = [episode.task_description]
        if feedback is not None and feedback.strip() and feedback.strip() != episode.look:
            parts.append(feedback.strip())
        parts += [episode.look, episode.inventory]
        return normalize_text("\n\n".join(parts), self.observation_space.max_length)

    def _make_info(self, episode: _Episode, *, feedback: str, valid: bool, changed: bool, progress: float,
                   delta: float, raw_score: int, commands: list[str] | None = None) -> dict[str, Any]:
        if commands is None:
            commands = self.admissible_commands() if self.admissible else []
        return {
            "admissible_commands": commands,
            "score": int(min(max(raw_score, 0), 100)),
            "won": raw_score >= 100,
            "failed": raw_score < 0,
            "valid_action": bool(valid),
            "state_changed": bool(changed),
            "progress": float(progress),
            "score_delta": float(delta),
            "feedback": feedback,
            "task": episode.task,
            "variation": episode.variation,
            "task_description": episode.task_description,
            "step": episode.steps,
        }

    def admissible_commands(self) -> list[str]:
        """Return the current state's valid action-object combinations, bounded (see :func:`bound_commands`).

        The list is computed at most once per state: after an action the simulator did not understand
        (``valid_action`` False, nothing happened) the previous list is reused.
        """
        episode = self._episode
        if self._jvm is None or episode is None:
            raise RuntimeError("call reset() before admissible_commands()")
        if episode.commands is None:
            combos = self._jvm.server.getValidActionObjectCombinations()
            episode.commands = bound_commands((str(c) for c in combos), self.max_admissible)
        return list(episode.commands)

    # ------------------------------------------------------------------ step

    def _to_command(self, action: Any) -> str:
        if isinstance(action, bytes):
            action = action.decode("utf-8", errors="replace")
        elif isinstance(action, np.ndarray) and action.ndim == 0:
            action = action.item()
        text = action if isinstance(action, str) else str(action)
        return text[: self.action_space.max_length]

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Send ``action`` to the simulator; return ``(observation, reward, terminated, truncated, info)``."""
        episode = self._episode
        if episode is None:
            raise RuntimeError("call reset() before step()")
        from py4j.protocol import Py4JError, Py4JJavaError

        command = self._to_command(action)
        episode.steps += 1
        jvm = self._jvm
        if jvm is None or not jvm.alive():
            return self._jvm_died(episode, command)
        server = jvm.server
        java_error = False
        try:
            feedback = str(server.step(command))
            if self.resolve_ambiguous and feedback.startswith(AMBIGUOUS_FEEDBACK):
                feedback = str(server.step("0"))
            raw_score = int(round(100 * server.getScore()))
            completed = bool(server.getCompleted())
            look = str(server.freeActionLook()).strip()
            inventory = str(server.freeActionInventory()).strip()
        except Py4JJavaError as error:
            feedback = f"The simulator could not process that action ({error.java_exception}); try another."
            logger.debug("ScienceWorld rejected %r: %s", command[:80], error)
            raw_score, completed, look, inventory = episode.score, False, episode.look, episode.inventory
            java_error = True
        except Py4JError as error:  # network / protocol failure: the JVM is gone or unusable
            logger.debug("ScienceWorld JVM call failed: %s", error)
            jvm.close()
            return self._jvm_died(episode, command)
        valid = not java_error and not feedback.lstrip().startswith(INVALID_FEEDBACK)
        if valid or java_error:
            episode.commands = None  # the state may have changed
        changed = valid and (look != episode.look or inventory != episode.inventory or raw_score != episode.score)
        delta = (raw_score - episode.score) / 100.0
        progress = 1.0 if raw_score > episode.score else 0.0
        won, failed = raw_score >= 100, raw_score < 0
        reward = 1.0 if won and episode.score < 100 else 0.0  # paid once, on the winning step
        terminated = won or failed or completed
        truncated = not terminated and episode.steps >= self.max_episode_steps
        episode.look, episode.inventory, episode.score = look, inventory, raw_score
        episode.done = terminated or truncated
        episode.observation = self._observation(episode, feedback)
        info = self._make_info(episode, feedback=feedback, valid=valid, changed=changed, progress=progress,
                               delta=delta, raw_score=raw_score)
        self._info = info
        return episode.observation, reward, terminated, truncated, info

    def _jvm_died(self, episode: _Episode, command: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        pid = self._jvm.pid if self._jvm is not None else None
        logger.warning("ScienceWorld JVM (pid %s) is dead; truncating the episode, the next reset() restarts it", pid)
        episode.done = True
        info = self._make_info(episode, feedback="The simulator stopped; the episode is over.", valid=False,
                               changed=False, progress=0.0, delta=0.0, raw_score=episode.score, commands=[])
        info["jvm_died"] = True
        self._info = info
        return episode.observation, 0.0, False, True, info

    def render(self) -> str | None:
        """Return the last observation text (``render_mode="ansi"``), else None."""
        if self.render_mode == "ansi" and self._episode is not None:
            return self._episode.observation
        return None


# --------------------------------------------------------------------------- primitives

_PROGRESS_DESCRIPTION = "the simulator's score rose on this step (info['progress'])"


def scienceworld_primitives(step_scorer: str | StepScorer = "progress") -> PrimitiveSet:
    """Return the paper's agent primitives for ScienceWorld as a :class:`PrimitiveSet`.

    g1 ``success``: 1 if the task was completed (score 100), else 0; g2, g3, g4: mean step score
    over the first, middle and last third of the trajectory, with ``step_scorer`` one of
    ``"progress"`` (default: the score rose), ``"valid"`` (the action was understood and changed
    the state) or ``"tags"`` (RLVMR reasoning tags fit the action), or a callable ``Step -> float``.
    """
    description = _PROGRESS_DESCRIPTION if step_scorer == "progress" else None
    label = step_scorer if isinstance(step_scorer, str) else getattr(step_scorer, "__name__", "step")
    return PrimitiveSet(
        [success_primitive("1 if the ScienceWorld task was completed (score 100, info['won']), else 0"),
         *segment_primitives(step_scorer, description=description)],
        name=f"scienceworld:{label}",
    )


__all__ = [
    "CHARSET", "L2_HELD_OUT_TASKS", "L2_HELD_OUT_TOPIC", "LEVELS", "SPLITS", "TASKS", "VARIATION_SPLITS",
    "ScienceWorldEnv", "ScienceWorldJVM", "bound_commands", "normalize_text", "resolve_task",
    "scienceworld_primitives", "split_episodes", "split_tasks", "split_variations", "task_names",
]
