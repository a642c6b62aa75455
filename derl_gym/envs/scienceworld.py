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

Speed: each step is one py4j call to a small compiled helper (:data:`HELPER_CLASS`, see
:func:`helper_classpath`) that steps, reads score/look/inventory and lists the valid actions
without the simulator's universe-wide referent table; py4j's sockets run with ``TCP_NODELAY``.

JVM lifecycle: the JVM starts on the first ``reset()``, ``close()`` ends it and waits for the
process to exit, a ``weakref.finalize`` ends it when the env is garbage-collected or the
interpreter exits, and the JVM is started with py4j's ``--die-on-broken-pipe`` so that it also
exits when its parent process is killed (e.g. a terminated vector-env worker). A JVM that died
is detected; the episode in progress is truncated and the next ``reset()`` starts a new one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import string
import subprocess
import tempfile
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
from derl_gym.utils.fastpath import StrList

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
    """Return the 30 simulator task names in the paper's order (index ``i`` = ``TASKS[i]``).

    Example:
        >>> from derl_gym.envs.scienceworld import task_names
        >>> names = task_names()
        >>> len(names), names[:3]
        (30, ['boil', 'melt', 'freeze'])
    """
    return [t[3] for t in TASKS]


def resolve_task(task: str | int) -> str:
    """Return the simulator task name for a name, a paper id (``"4-1"``), a title or an index.

    Raises:
        ValueError: an unknown task (the message names it and lists the valid names).

    Example:
        >>> from derl_gym.envs.scienceworld import resolve_task
        >>> resolve_task("4-1"), resolve_task(0), resolve_task("Find a plant")
        ('find-living-thing', 'boil', 'find-plant')
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

    Example:
        >>> from derl_gym.envs.scienceworld import split_tasks
        >>> len(split_tasks("L0", "train")), len(split_tasks("L2", "train")), split_tasks("L2", "test")[:2]
        (30, 26, ['power-component', 'power-component-renewable-vs-nonrenewable-energy'])
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

    Raises:
        ValueError: the task does not belong to the level's split (L2 held-out tasks cannot be
            trained on, and only they are tested), or an unknown level/split.

    Example:
        >>> from derl_gym.envs.scienceworld import split_variations
        >>> split_variations("find-living-thing", "validation")[:4]
        [4, 9, 14, 19]
        >>> train = split_variations("find-living-thing", "train")
        >>> unseen = split_variations("find-living-thing", "test", level="L1")
        >>> len(train), set(train).isdisjoint(unseen)
        (120, True)
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

    Example:
        >>> from derl_gym.envs.scienceworld import split_episodes
        >>> split_episodes("4-1", "validation")[:2]
        [('find-living-thing', 4), ('find-living-thing', 9)]
        >>> sorted({task for task, _ in split_episodes(split="test", level="L2")})[:2]
        ['power-component', 'power-component-renewable-vs-nonrenewable-energy']
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

#: Environment variable: ``0`` turns the compiled JVM-side helper off (every value then comes back
#: through the simulator's own ``PythonInterface`` methods, one py4j round trip each).
HELPER_ENV = "DERL_GYM_SCIENCEWORLD_HELPER"
HELPER_CLASS = "DerlScienceWorldHelper"
_SEP = "\x01"

#: Java source of the JVM-side helper, compiled once (``javac``, cached under
#: ``$DERL_GYM_CACHE/scienceworld``) and put on the JVM's classpath. It does what the env would do
#: in 5-6 py4j calls per step (step, answer an ambiguity, score, completed, look, inventory, the
#: valid actions) in one, and lists the valid actions as the simulator's
#: ``AgentInterface.getValidActionObjectCombinations`` does, except that the teleport actions (the
#: only ones that look at every object of the universe, which costs most of the listing) are
#: computed once per loaded episode: locations never change within one.
#: ``tests/envs/test_scienceworld.py`` checks that the list is the simulator's, action for action.
_HELPER_SOURCE = r"""
import java.util.Map;
import java.util.WeakHashMap;

import main.scala.scienceworld.actions.ActionTeleport;
import main.scala.scienceworld.runtime.SimplifierProcessor;
import scienceworld.actions.PossibleAction;
import scienceworld.input.ActionDefinitions;
import scienceworld.input.InputParser;
import scienceworld.runtime.AgentInterface;
import scienceworld.runtime.pythonapi.PythonInterface;
import scienceworld.struct.EnvObject;

/** derl-gym: one py4j call per ScienceWorld step (generated by derl_gym/envs/scienceworld.py). */
public final class DerlScienceWorldHelper {
    private static final String SEP = "\u0001";
    private static final String[] INVALID = {@INVALID@};
    private static final EnvObject[] NONE = new EnvObject[0];
    private static final scala.reflect.ClassTag<EnvObject> TAG = scala.reflect.ClassTag$.MODULE$.apply(EnvObject.class);
    private static final Map<AgentInterface, String> TELEPORTS = new WeakHashMap<>();

    private DerlScienceWorldHelper() {}

    private static boolean invalid(String feedback) {
        String text = feedback.stripLeading();
        for (String prefix : INVALID) if (text.startsWith(prefix)) return true;
        return false;
    }

    /** score SEP completed SEP hasActions SEP look SEP inventory SEP actions SEP feedback (feedback last). */
    public static String step(PythonInterface pi, String command, boolean resolveAmbiguous, boolean actions) {
        String feedback = pi.step(command);
        if (resolveAmbiguous && feedback.startsWith("Ambiguous request")) feedback = pi.step("0");
        String list = actions && !invalid(feedback) ? safeValidActions(pi) : null;
        StringBuilder out = new StringBuilder(feedback.length() + 8192);
        out.append(pi.getScore()).append(SEP).append(pi.getCompleted()).append(SEP).append(list != null).append(SEP)
           .append(pi.freeActionLook()).append(SEP).append(pi.freeActionInventory()).append(SEP)
           .append(list != null ? list : "").append(SEP).append(feedback);
        return out.toString();
    }

    /** validActions, or null when it throws (the env then asks again on demand). */
    private static String safeValidActions(PythonInterface pi) {
        try {
            return validActions(pi);
        } catch (RuntimeException error) {
            return null;
        }
    }

    /** load + look around: score SEP hasActions SEP task description SEP look SEP inventory SEP actions. */
    public static String reset(PythonInterface pi, String task, int variation, String simplification, boolean gold,
                               boolean actions) {
        pi.load(task, variation, simplification, gold);
        pi.step("look around");  // the score is only refreshed by a step (as the upstream reset)
        String list = actions ? safeValidActions(pi) : null;
        return pi.getScore() + SEP + (list != null) + SEP + pi.freeActionTaskDesc() + SEP + pi.freeActionLook() + SEP
            + pi.freeActionInventory() + SEP + (list != null ? list : "");
    }

    /** The valid action-object combinations joined by newlines, as PythonInterface.getValidActionObjectCombinations. */
    public static String validActions(PythonInterface pi) {
        if (pi.agentInterface().isEmpty()) return String.join("\n", pi.getValidActionObjectCombinations());
        AgentInterface ai = pi.agentInterface().get();
        if (ai.inputParser().isInAmbiguousState()) return String.join("\n", pi.getValidActionObjectCombinations());
        EnvObject root = ai.getAgentVisibleObjects(false)._2();
        EnvObject[] visible = (EnvObject[]) InputParser.collectObjects(root, false).toArray(TAG);
        scala.collection.immutable.Map<Object, String> lut =
            ai.inputParser().getAllUniqueReferentsLUTObjList(visible, root, true, true);
        StringBuilder out = new StringBuilder(8192);
        for (PossibleAction action : ActionDefinitions.mkPossibleActions(ai.agent(), visible, NONE, lut, lut)) {
            if (out.length() > 0) out.append('\n');
            out.append(action.mkHumanReadableStr());
        }
        String teleports = teleports(ai, root);
        if (!teleports.isEmpty()) out.append(out.length() > 0 ? "\n" : "").append(teleports);
        return out.toString();
    }

    /** The same list as the simulator's template JSON objects, one a line (for tests). */
    public static String validActionTemplates(PythonInterface pi) {
        AgentInterface ai = pi.agentInterface().get();
        EnvObject root = ai.getAgentVisibleObjects(false)._2();
        EnvObject[] visible = (EnvObject[]) InputParser.collectObjects(root, false).toArray(TAG);
        scala.collection.immutable.Map<Object, String> lut =
            ai.inputParser().getAllUniqueReferentsLUTObjList(visible, root, true, true);
        StringBuilder out = new StringBuilder();
        for (PossibleAction action : ActionDefinitions.mkPossibleActions(ai.agent(), visible, NONE, lut, lut)) {
            out.append(action.toTemplate().toJSON()).append('\n');
        }
        for (PossibleAction action : teleportActions(ai, root)) out.append(action.toTemplate().toJSON()).append('\n');
        return out.toString();
    }

    private static PossibleAction[] teleportActions(AgentInterface ai, EnvObject root) {
        if (!SimplifierProcessor.isSimplificationEnabled(SimplifierProcessor.SIMPLIFICATION_TELEPORT_ACTION())) {
            return new PossibleAction[0];
        }
        EnvObject[] all = (EnvObject[]) InputParser.collectObjects(ai.universe(), true).toArray(TAG);
        scala.collection.immutable.Map<Object, String> lutAll =
            ai.inputParser().getAllUniqueReferentsLUTObjList(all, root, true, true);
        return ActionTeleport.generatePossibleValidActions(ai.agent(), all, lutAll);
    }

    private static synchronized String teleports(AgentInterface ai, EnvObject root) {
        String cached = TELEPORTS.get(ai);
        if (cached != null) return cached;
        StringBuilder out = new StringBuilder();
        for (PossibleAction action : teleportActions(ai, root)) {
            if (out.length() > 0) out.append('\n');
            out.append(action.mkHumanReadableStr());
        }
        String result = out.toString();
        TELEPORTS.put(ai, result);
        return result;
    }
}
"""


def helper_source() -> str:
    """Return the Java source of the JVM-side helper (:data:`_HELPER_SOURCE` with the invalid-feedback prefixes).

    Example:
        >>> from derl_gym.envs.scienceworld import HELPER_CLASS, helper_source
        >>> f"class {HELPER_CLASS}" in helper_source()
        True
    """
    prefixes = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in INVALID_FEEDBACK)
    return _HELPER_SOURCE.replace("@INVALID@", prefixes)


def _javac() -> str | None:
    """Return the ``javac`` next to the ``java`` that runs the simulator (or on PATH), else None."""
    java_home = os.environ.get("JAVA_HOME")
    candidates = [os.path.join(java_home, "bin", "javac")] if java_home else []
    java = shutil.which("java")
    if java:
        candidates.append(os.path.join(os.path.dirname(os.path.realpath(java)), "javac"))
    found = shutil.which("javac")
    if found:
        candidates.append(found)
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def helper_classpath() -> str | None:
    """Return the folder holding the compiled :data:`HELPER_CLASS`, compiling it on first use; None if impossible.

    The class is compiled against the installed simulator jar with the JDK's ``javac`` into
    ``$DERL_GYM_CACHE/scienceworld/helper-<digest>`` (default ``~/.cache/derl_gym/...``; the digest
    covers the source and the jar, so a new simulator gets a new build). Without a JDK (a JRE has no
    ``javac``) or when compiling fails, this logs why and returns None: the env then talks to the
    simulator's own methods only (same results, more round trips).

    Example:
        >>> import os
        >>> from derl_gym.envs.scienceworld import HELPER_CLASS, helper_classpath
        >>> folder = helper_classpath()  # compiles once per simulator version; None without a JDK
        >>> folder is None or os.path.isfile(os.path.join(folder, HELPER_CLASS + ".class"))
        True
    """
    from scienceworld.constants import JAR_PATH

    source = helper_source()
    try:
        jar = os.stat(JAR_PATH)
    except OSError as error:
        logger.warning("ScienceWorld jar %s not readable (%s); not compiling the helper", JAR_PATH, error)
        return None
    digest = hashlib.sha256(f"{source}\0{JAR_PATH}\0{jar.st_size}\0{jar.st_mtime_ns}".encode()).hexdigest()[:16]
    base = os.environ.get("DERL_GYM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "derl_gym")
    target = os.path.join(base, "scienceworld", f"helper-{digest}")
    if os.path.isfile(os.path.join(target, HELPER_CLASS + ".class")):
        return target
    if target in _HELPER_FAILED:  # tried (and warned) once in this process already
        return None
    built = _build_helper(source, target, JAR_PATH)
    if built is None:
        _HELPER_FAILED.add(target)
    return built


#: helper build folders whose build failed in this process (not retried, not warned again)
_HELPER_FAILED: set[str] = set()


def _build_helper(source: str, target: str, jar_path: str) -> str | None:
    """Compile the helper into ``target`` (atomically); return ``target``, or None after logging why not."""
    javac = _javac()
    if javac is None:
        logger.warning("no javac found (install a JDK, or set JAVA_HOME): ScienceWorld runs without its JVM-side "
                       "helper, about 2x slower per step")
        return None
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        work = tempfile.mkdtemp(prefix="helper-build-", dir=os.path.dirname(target))
    except OSError as error:
        logger.warning("cannot build the ScienceWorld helper under %s (%s); set DERL_GYM_CACHE to a writable folder",
                       os.path.dirname(target), error)
        return None
    try:
        path = os.path.join(work, HELPER_CLASS + ".java")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(source)
        out = os.path.join(work, "classes")
        done = subprocess.run([javac, "-nowarn", "-encoding", "UTF-8", "-cp", jar_path, "-d", out, path],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            logger.warning("compiling the ScienceWorld helper failed (%s): %s", javac, done.stderr.strip()[-2000:])
            return None
        try:
            os.rename(out, target)  # atomic; another process may have won the race, which is fine
        except OSError:
            if not os.path.isfile(os.path.join(target, HELPER_CLASS + ".class")):
                raise
        return target
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("compiling the ScienceWorld helper failed: %s", error)
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _helper_enabled(requested: bool | None) -> bool:
    if requested is not None:
        return bool(requested)
    return os.environ.get(HELPER_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _set_no_delay(gateway: Any) -> int:
    """Turn Nagle's algorithm off on both ends of every py4j connection; return how many JVM-side sockets were set.

    py4j writes answers in 8 KiB pieces; with Nagle on the JVM side and delayed ACKs on ours, an
    answer longer than 8 KiB (a valid-action list, a long look text) waits ~40 ms for an ACK.
    """
    import socket

    for connection in list(getattr(gateway._gateway_client, "deque", ())):
        sock = getattr(connection, "socket", None)
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
    jvm = gateway.jvm
    field = jvm.java.lang.Class.forName("py4j.GatewayServer").getDeclaredField("connections")
    field.setAccessible(True)
    connections = field.get(gateway.java_gateway_server)
    count = connections.size()
    for i in range(count):
        connections.get(i).getSocket().setTcpNoDelay(True)
    return count


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

    ``server`` is the simulator's ``PythonInterface``. With ``helper`` (default: on unless
    ``$DERL_GYM_SCIENCEWORLD_HELPER=0``) the compiled :data:`HELPER_CLASS` is on the classpath and
    :meth:`step`, :meth:`reset` and :meth:`valid_actions` take one py4j call each; without it (or
    when it cannot be compiled: ``helper_active`` is False) they call the simulator's own methods.
    ``close()`` (also run by a ``weakref.finalize`` on garbage collection and at interpreter exit)
    ends the process and waits for it. ``start_seconds`` is how long the JVM took to start;
    ``listings`` counts the valid-action listings made.

    Example:
        >>> from derl_gym.envs.scienceworld import ScienceWorldEnv
        >>> env = ScienceWorldEnv("find-living-thing")  # an env makes its ScienceWorldJVM on the first reset
        >>> env.java_pid is None  # no Java process yet (see ScienceWorldEnv for one that runs)
        True
        >>> env.close()
    """

    def __init__(self, java_options: Sequence[str] = DEFAULT_JAVA_OPTIONS, helper: bool | None = None) -> None:
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from scienceworld.constants import BASEPATH, JAR_PATH

        start = time.perf_counter()
        helper_dir = helper_classpath() if _helper_enabled(helper) else None
        classpath = JAR_PATH if helper_dir is None else JAR_PATH + os.pathsep + helper_dir
        port, proc = launch_gateway(classpath=classpath, die_on_exit=True, cwd=BASEPATH, return_proc=True,
                                    javaopts=list(java_options))
        gateway = JavaGateway(gateway_parameters=GatewayParameters(port=port, auto_field=False, auto_close=True),
                              java_process=proc)
        self._finalizer = weakref.finalize(self, _stop_jvm, gateway, proc)
        try:
            self.server = gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()
            self._no_delay = self._tune_sockets(gateway)
            self._join = gateway.jvm.java.lang.String.join
            self._helper_step = self._helper_reset = self._helper_actions = None
            if helper_dir is not None:
                helper_class = getattr(gateway.jvm, HELPER_CLASS)
                # JavaClass attribute lookups are round trips: bind the static methods once.
                self._helper_step = helper_class.step
                self._helper_reset = helper_class.reset
                self._helper_actions = helper_class.validActions
                self._helper_templates = helper_class.validActionTemplates
        except BaseException:
            self._finalizer()
            raise
        self._gateway = gateway
        self._proc = proc
        self.listings = 0
        self.start_seconds = time.perf_counter() - start
        logger.debug("ScienceWorld JVM pid %d started on port %d in %.2fs (helper %s)", proc.pid, port,
                     self.start_seconds, "on" if self.helper_active else "off")

    @staticmethod
    def _tune_sockets(gateway: Any) -> int:
        try:
            return _set_no_delay(gateway)
        except Exception as error:  # noqa: BLE001  (an optimisation: never fatal)
            logger.debug("could not turn Nagle off on the py4j sockets: %s", error)
            return -1

    def _check_sockets(self) -> None:
        """Re-tune when py4j opened another connection (calls from a second thread)."""
        if self._no_delay >= 0 and len(self._gateway._gateway_client.deque) > self._no_delay:
            self._no_delay = self._tune_sockets(self._gateway)

    @property
    def helper_active(self) -> bool:
        """True when the compiled JVM-side helper is in use."""
        return self._helper_step is not None

    def valid_actions(self) -> list[str]:
        """Return the simulator's valid action-object combinations of the current state (unsorted, raw)."""
        from py4j.protocol import Py4JJavaError

        self.listings += 1
        text = None
        if self._helper_actions is not None:
            try:
                text = str(self._helper_actions(self.server))
            except Py4JJavaError as error:  # fall back to the simulator's own listing
                logger.debug("the helper's valid-action listing failed: %s", error)
        if text is None:
            text = str(self._join("\n", self.server.getValidActionObjectCombinations()))
        return text.split("\n") if text else []

    def reset(self, task: str, variation: int, simplification: str, gold: bool,
              actions: bool) -> tuple[float, str, str, str, list[str] | None]:
        """Load an episode and look around; return ``(score 0-1, task description, look, inventory, actions)``.

        ``actions`` is the valid-action list when ``actions`` is True (and it could be listed), else None.
        """
        self._check_sockets()
        if self._helper_reset is not None:
            parts = str(self._helper_reset(self.server, task, int(variation), simplification, bool(gold),
                                           bool(actions))).split(_SEP, 5)
            listed = parts[1] == "true"
            if listed:
                self.listings += 1
            commands = (parts[5].split("\n") if parts[5] else []) if listed else None
            return float(parts[0]), parts[2], parts[3], parts[4], commands
        server = self.server
        server.load(task, int(variation), simplification, bool(gold))
        server.step("look around")  # the score is only refreshed by a step (as the upstream reset)
        commands = self.valid_actions() if actions else None
        return (float(server.getScore()), str(server.freeActionTaskDesc()), str(server.freeActionLook()),
                str(server.freeActionInventory()), commands)

    def step(self, command: str, resolve_ambiguous: bool,
             actions: bool) -> tuple[str, float, bool, str, str, list[str] | None]:
        """Send ``command``; return ``(feedback, score 0-1, completed, look, inventory, actions)``.

        An ``Ambiguous request`` is answered with ``0`` when ``resolve_ambiguous``. ``actions`` is
        the new valid-action list when ``actions`` is True and the simulator understood the command
        (else None: nothing happened, the previous list still holds).
        """
        self._check_sockets()
        if self._helper_step is not None:
            parts = str(self._helper_step(self.server, command, bool(resolve_ambiguous), bool(actions))).split(_SEP, 6)
            listed = parts[2] == "true"
            if listed:
                self.listings += 1
            commands = (parts[5].split("\n") if parts[5] else []) if listed else None
            return parts[6], float(parts[0]), parts[1] == "true", parts[3], parts[4], commands
        server = self.server
        feedback = str(server.step(command))
        if resolve_ambiguous and feedback.startswith(AMBIGUOUS_FEEDBACK):
            feedback = str(server.step("0"))
        score, completed = float(server.getScore()), bool(server.getCompleted())
        look, inventory = str(server.freeActionLook()), str(server.freeActionInventory())
        commands = self.valid_actions() if actions and not feedback.lstrip().startswith(INVALID_FEEDBACK) else None
        return feedback, score, completed, look, inventory, commands

    def valid_action_templates(self) -> list[dict[str, Any]] | None:
        """The helper's listing as the simulator's template records (``template_id``, ``obj_ids``...); None without it.

        For tests: compare with ``json.loads(server.getValidActionObjectCombinationsJSON())["validActions"]``.
        """
        if self._helper_step is None:
            return None
        import json

        return [json.loads(line) for line in str(self._helper_templates(self.server)).split("\n") if line]

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
    """Return ``text`` with characters outside :data:`CHARSET` replaced by ``?`` and cut to ``max_length``.

    Example:
        >>> from derl_gym.envs.scienceworld import normalize_text
        >>> normalize_text("café → kitchen", max_length=100), normalize_text("a long observation", max_length=9)
        ('caf? ? kitchen', 'a long...')
    """
    if any(ch not in _CHARSET_SET for ch in text):
        text = "".join(ch if ch in _CHARSET_SET else "?" for ch in text)
    if len(text) > max_length:
        text = text[: max_length - 3] + "..." if max_length >= 3 else text[:max_length]
    return text


def bound_commands(commands: Iterable[str], max_commands: int | None) -> list[str]:
    """Return the sorted, deduplicated ``commands`` without :data:`EXCLUDED_COMMANDS`, at most ``max_commands``.

    When there are too many, commands are taken round-robin over their verbs (first word, in
    sorted order) so that every kind of action stays represented; the result is sorted.

    Example:
        >>> from derl_gym.envs.scienceworld import bound_commands
        >>> bound_commands(["open door", "look around", "open box", "go to kitchen", "look around"], max_commands=3)
        ['go to kitchen', 'look around', 'open box']
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
        jvm_helper: use the compiled JVM-side helper (one py4j call per step, cheaper valid-action
            listing; see :class:`ScienceWorldJVM`). ``None`` = on unless ``$DERL_GYM_SCIENCEWORLD_HELPER=0``.

    Reward: 1.0 on the step where the score reaches 100 (``info["won"]``), else 0.0 (also on
    steps taken after the episode ended). ``info["progress"]``
    is 1.0 when the score rose this step, else 0.0 (``info["score_delta"]`` has the signed change / 100).
    ``info["score"]`` is the simulator's score clipped to [0, 100]; a negative raw score means the task
    failed (``info["failed"]``) and terminates the episode with reward 0.

    Example:
        >>> import gymnasium as gym
        >>> import derl_gym  # registers derl_gym/ScienceWorld-v0
        >>> env = gym.make("derl_gym/ScienceWorld-v0", task="find-living-thing", max_episode_steps=5)
        >>> observation, info = env.reset(seed=0)  # starts the simulator's JVM (a few seconds)
        >>> observation.startswith("Task Description:"), info["task"], "look around" in info["admissible_commands"]
        (True, 'find-living-thing', True)
        >>> _, reward, terminated, truncated, info = env.step("fly to the moon")
        >>> reward, terminated, info["valid_action"], info["feedback"]
        (0.0, False, False, 'No known action matches that input.')
        >>> env.close()  # ends the JVM
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, task: str | int | Sequence[str | int] | None = None, split: str = "train",
                 level: str = "L0", simplification: str = "easy", max_episode_steps: int = 100,
                 max_admissible: int | None = 256, seed: int | None = None, admissible: bool = True,
                 resolve_ambiguous: bool = True, max_observation_length: int = 16384,
                 max_action_length: int = 1024, java_options: Sequence[str] = DEFAULT_JAVA_OPTIONS,
                 render_mode: str | None = None, jvm_helper: bool | None = None) -> None:
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
        self.jvm_helper = jvm_helper
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
            self._jvm = ScienceWorldJVM(self.java_options, helper=self.jvm_helper)
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
                score, description, look, inventory, commands = jvm.reset(name, variation, self.simplification, gold,
                                                                           self.admissible)
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
        episode.task_description = description.strip()
        episode.look = look.strip()
        episode.inventory = inventory.strip()
        episode.score = int(round(100 * score))
        if commands is not None:
            episode.commands = bound_commands(commands, self.max_admissible)
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
        (``valid_action`` False, nothing happened) the previous list is reused. With ``admissible``
        on, it comes back in the same py4j call as the step. Returns a :class:`~derl_gym.utils.StrList`
        (a ``list`` whose deep copy is cheap), a new one on each call.
        """
        episode = self._episode
        if self._jvm is None or episode is None:
            raise RuntimeError("call reset() before admissible_commands()")
        if episode.commands is None:
            episode.commands = bound_commands(self._jvm.valid_actions(), self.max_admissible)
        return StrList(episode.commands)

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
        java_error = False
        commands: list[str] | None = None
        try:
            feedback, score, completed, look, inventory, commands = jvm.step(command, self.resolve_ambiguous,
                                                                             self.admissible)
            raw_score = int(round(100 * score))
            look, inventory = look.strip(), inventory.strip()
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
            # the state may have changed: the list that came with the step, else computed on demand
            episode.commands = None if commands is None else bound_commands(commands, self.max_admissible)
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

    Example:
        >>> from derl_gym.envs.scienceworld import scienceworld_primitives
        >>> scienceworld_primitives().names
        ['success', 'progress_first', 'progress_middle', 'progress_last']
        >>> scienceworld_primitives("valid").name
        'scienceworld:valid'
    """
    description = _PROGRESS_DESCRIPTION if step_scorer == "progress" else None
    label = step_scorer if isinstance(step_scorer, str) else getattr(step_scorer, "__name__", "step")
    return PrimitiveSet(
        [success_primitive("1 if the ScienceWorld task was completed (score 100, info['won']), else 0"),
         *segment_primitives(step_scorer, description=description)],
        name=f"scienceworld:{label}",
    )


__all__ = [
    "CHARSET", "HELPER_CLASS", "HELPER_ENV", "L2_HELD_OUT_TASKS", "L2_HELD_OUT_TOPIC", "LEVELS", "SPLITS", "TASKS",
    "VARIATION_SPLITS", "ScienceWorldEnv", "ScienceWorldJVM", "bound_commands", "helper_classpath", "helper_source",
    "normalize_text", "resolve_task", "scienceworld_primitives", "split_episodes", "split_tasks", "split_variations",
    "task_names",
]
