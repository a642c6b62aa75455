"""Engine layer for ALFWorld games on TextWorld's PDDL machinery, with a transition cache.

Two engines play a ``.tw-pddl`` game (JSON with ``pddl_domain``, ``grammar``, ``pddl_problem``):

- :class:`ReferenceEngine` is exactly what upstream ``alfworld`` runs: TextWorld's ``PddlEnv``
  wrapped in alfworld's ``AlfredDemangler`` (objects read "apple 1"), asked for the planner's
  ``policy_commands`` on every state. It is the ``cache=False`` path of the env and the yardstick
  for the cached path.
- :class:`FastEngine` drives the same TextWorld objects (``GameLogic``, ``PddlState``, the
  fast-downward library, the grammar, alfworld's ``Demangler``) and produces the same text, but
  caches what is a pure function of the game text (the parsed grammar, the PDDL -> SAS translation),
  computes admissible commands only when asked, and can *replay* a list of planner operators
  without deriving any text, so that it can be re-synchronised cheaply after the env has followed a
  cached path.

:class:`TransitionCache` is a process-wide, bounded LRU table keyed on ``(game, state, command)``;
the PDDL state is deterministic, so a hit answers a step without touching any engine. States are
identified by a digest of the full TextWorld fact set (including the explicit ``not_*`` facts that
TextWorld keeps after negative effects, because the grammar reads them).

Whitespace: alfworld's ``Demangler`` names an object without a numeric suffix (``desk`` in a
hand-written or TextWorld-made game, where upstream ids carry ``_bar_`` coordinates) ``"desk "``,
so upstream's admissible commands read ``"go to desk "`` and ``"take cd  from bed "`` and
TextWorld, which strips the incoming command, answers its own planner's walkthrough with
"Nothing happens.". Both engines therefore strip demangled names and pass admissible commands,
incoming commands and stored walkthroughs through :func:`normalize_command` (runs of whitespace
collapsed to one space, ends stripped). On numbered games ("apple 1") this changes nothing.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from derl_gym.envs.alfworld.textworld_import import import_textworld
from derl_gym.utils.fastpath import fast_path_enabled
from derl_gym.utils.lru import LRUCache

logger = logging.getLogger(__name__)

#: keys every ``.tw-pddl`` game file must carry.
GAME_KEYS = ("pddl_domain", "grammar", "pddl_problem")

#: bookkeeping predicates that observing actions (look, examine, inventory) add; they are ignored
#: when deciding whether an action changed the world (``info["state_changed"]``).
BOOKKEEPING_PREDICATES = frozenset({"checked", "examined"})

#: plan length reported when the planner finds no plan from a (non-goal) state.
NO_PLAN = -1


# ----------------------------------------------------------------------------- whitespace

def normalize_command(text: str) -> str:
    """Return ``text`` with every run of whitespace collapsed to one space and the ends stripped.

    ``"go to  desk "`` -> ``"go to desk"``; applied to demangled names, admissible commands,
    incoming actions and stored walkthroughs, so that both spellings of a command match.

    Example:
        >>> from derl_gym.envs.alfworld.engine import normalize_command
        >>> normalize_command("take cd  from bed "), normalize_command("go to\\tdesk 1\\n")
        ('take cd from bed', 'go to desk 1')
    """
    return " ".join(text.split())


@lru_cache(maxsize=None)
def _normalizing_demangler_class() -> type:
    """Return alfworld's ``AlfredDemangler`` subclass that strips the demangled names (imported lazily)."""
    import_textworld()  # first, so that importing TextWorld leaves np.random's global state alone
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

    class NormalizingDemangler(AlfredDemangler):
        """``AlfredDemangler`` whose names go through :func:`normalize_command` ("desk " -> "desk")."""

        def load(self, *args: Any, **kwargs: Any) -> None:
            super().load(*args, **kwargs)
            for info in self._entity_infos.values():
                info.name = normalize_command(info.name)

    return NormalizingDemangler


def make_reference_env(infos: Any = None, shuffle: bool = False) -> Any:
    """Return TextWorld's ``PddlEnv`` wrapped in alfworld's ``AlfredDemangler`` with stripped names.

    This is upstream's engine (what ``AlfredTWEnv`` builds) except that an object without a numeric
    suffix reads ``"desk"`` rather than ``"desk "``, so its commands ("go to desk") survive
    TextWorld's stripping of the incoming command. ``infos`` is a ``textworld.EnvInfos``
    (default: ``won`` and ``admissible_commands``); ``shuffle`` goes to the demangler.

    Example:
        On one of the small cached games of :class:`~derl_gym.envs.alfworld.env.ALFWorldEnv`'s example
        (fast-downward overwrites ``sys.argv`` while loading a game: :class:`ReferenceEngine` restores it):

        >>> import sys
        >>> from derl_gym.envs.alfworld.engine import _example_game, make_reference_env
        >>> game = _example_game()
        >>> env = make_reference_env()
        >>> argv = list(sys.argv)
        >>> env.load(game.data); state = env.reset(); sys.argv[:] = argv
        >>> state["won"], "go to sidetable 1" in state["admissible_commands"]
        (False, True)
        >>> state, _, done = env.step("go to sidetable 1")
        >>> state.feedback, done
        ('You arrive at sidetable 1. On the sidetable 1, you see a book 1.', False)
        >>> env.close()
    """
    textworld = import_textworld()
    from textworld.envs.pddl import PddlEnv

    if infos is None:
        infos = textworld.EnvInfos(won=True, admissible_commands=True)
    return _normalizing_demangler_class()(PddlEnv(infos), shuffle=shuffle)


# ----------------------------------------------------------------------------- game files

@dataclass(frozen=True)
class GameFile:
    """A parsed ``.tw-pddl`` game: its path, the three PDDL/grammar texts and optional metadata.

    ``key`` is a digest of the three texts: two files with the same content share cache entries.
    :func:`load_game_file` builds one from a file; ``data`` is the dict TextWorld's ``PddlEnv.load`` takes.

    Example:
        >>> from derl_gym.envs.alfworld.engine import GameFile, load_game_file
        >>> from derl_gym.envs.alfworld.splits import get_split_games
        >>> game = load_game_file(get_split_games("L0", "train", generator="tiny")[0])
        >>> isinstance(game, GameFile), len(game.key), game.solvable, game.walkthrough[:2]
        (True, 32, True, ('go to sidetable 1', 'take book 1 from sidetable 1'))
        >>> sorted(game.data), game.data["walkthrough"] == list(game.walkthrough)
        (['grammar', 'pddl_domain', 'pddl_problem', 'walkthrough'], True)
    """

    path: str
    pddl_domain: str
    grammar: str
    pddl_problem: str
    walkthrough: tuple[str, ...] | None = None
    solvable: bool | None = None
    key: str = ""

    @property
    def data(self) -> dict[str, Any]:
        """Return the dict TextWorld's ``PddlEnv.load`` accepts."""
        return {"pddl_domain": self.pddl_domain, "grammar": self.grammar, "pddl_problem": self.pddl_problem,
                "walkthrough": list(self.walkthrough) if self.walkthrough is not None else None}


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


#: parsed game files by (resolved path, mtime, size); a GameFile holds the three texts (~20-60 kB)
_GAME_FILE_CACHE: LRUCache = LRUCache(4096, name="alfworld.game_files",
                                      description="parsed .tw-pddl files by (path, mtime, size)")
_LOCK = threading.RLock()


def load_game_file(path: str | Path) -> GameFile:
    """Read and validate a ``.tw-pddl`` game file; returns a :class:`GameFile`.

    The stored ``walkthrough`` (if any) goes through :func:`normalize_command`.
    Raises ``FileNotFoundError`` when the file is missing and ``ValueError`` naming the file when it
    is not JSON, not a JSON object, or lacks one of ``pddl_domain``, ``grammar``, ``pddl_problem``
    (or one of them is not a non-empty string). Parsed files are memoised by (path, mtime, size).

    Args:
        path: a ``.tw-pddl`` file (JSON with ``pddl_domain``, ``grammar`` and ``pddl_problem``).

    Returns:
        The :class:`GameFile` (the same object again while the file is unchanged).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a valid game file (the message names the file and the problem).

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> from derl_gym.envs.alfworld.engine import load_game_file
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder, "game.tw-pddl")
        ...     _ = path.write_text(json.dumps({"pddl_domain": "(define (domain d))", "grammar": "{}",
        ...                                     "pddl_problem": "(define (problem p))",
        ...                                     "walkthrough": ["go to  desk "], "solvable": True}))
        ...     game = load_game_file(path)
        ...     memoised = load_game_file(path) is game
        ...     _ = path.write_text(json.dumps({"pddl_domain": "(define (domain d))", "grammar": "{}"}))
        ...     load_game_file(path)
        Traceback (most recent call last):
            ...
        ValueError: ALFWorld game file '.../game.tw-pddl' is missing the key 'pddl_problem'; ...
        >>> game.walkthrough, game.solvable, memoised
        (('go to desk',), True, True)
        >>> load_game_file("no/such/game.tw-pddl")
        Traceback (most recent call last):
            ...
        FileNotFoundError: ALFWorld game file 'no/such/game.tw-pddl' does not exist; ...
    """
    p = Path(path)
    try:
        stat = p.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"ALFWorld game file {str(p)!r} does not exist; pass existing .tw-pddl paths "
                                "in games=, or a json_2.1.1 folder in data_dir=") from None
    memo_key = (str(p.resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _GAME_FILE_CACHE.get(memo_key)
    if cached is not None:
        return cached
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"ALFWorld game file {str(p)!r} is not valid JSON ({err}); a .tw-pddl file is a JSON "
                         f"object with keys {', '.join(GAME_KEYS)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"ALFWorld game file {str(p)!r} holds a JSON {type(data).__name__}, not an object with "
                         f"keys {', '.join(GAME_KEYS)}")
    for key in GAME_KEYS:
        if key not in data:
            raise ValueError(f"ALFWorld game file {str(p)!r} is missing the key {key!r}; a .tw-pddl file needs "
                             f"{', '.join(GAME_KEYS)} (see alfworld's alfworld-generate)")
        if not isinstance(data[key], str) or not data[key].strip():
            raise ValueError(f"ALFWorld game file {str(p)!r}: key {key!r} must be a non-empty string, "
                             f"got {type(data[key]).__name__}")
    walkthrough = data.get("walkthrough")
    if walkthrough is not None and not (isinstance(walkthrough, list) and all(isinstance(c, str) for c in walkthrough)):
        walkthrough = None
    game = GameFile(path=str(p), pddl_domain=data["pddl_domain"], grammar=data["grammar"],
                    pddl_problem=data["pddl_problem"],
                    walkthrough=(tuple(normalize_command(c) for c in walkthrough)
                                 if walkthrough is not None else None),
                    solvable=data.get("solvable") if isinstance(data.get("solvable"), bool) else None,
                    key=_digest(data["pddl_domain"], data["grammar"], data["pddl_problem"]))
    _GAME_FILE_CACHE.put(memo_key, game)
    return game


def task_line(text: str) -> str:
    """Return the ``"Your task is to: ..."`` line of an ALFWorld intro text ("" when absent).

    Example:
        >>> from derl_gym.envs.alfworld.engine import task_line
        >>> task_line("-= Welcome =-\\n\\nYou see a desk 1.\\n\\nYour task is to: put some book on drawer.\\n")
        'Your task is to: put some book on drawer.'
        >>> task_line("You see a desk 1.")
        ''
    """
    marker = "Your task is to:"
    start = text.rfind(marker)
    if start < 0:
        return ""
    return text[start:].split("\n", 1)[0].strip()


# ----------------------------------------------------------------------------- bounded memos

#: the bounded LRU mapping every cache of this module uses (kept under its old name for callers)
_LRU = LRUCache

#: digest(domain, grammar) -> textworld GameLogic (one parsed grammar, ~1-3 MB; a game's task rule
#: shares the rest of the parse, so an ALFWorld game adds little)
_LOGIC_CACHE = LRUCache(64, name="alfworld.logic", description="parsed GameLogic by (domain, grammar)")
#: digest(domain, problem) -> (task, sas, sas_replan): the fast-downward translation (~0.2-0.5 MB)
_TRANSLATION_CACHE = LRUCache(512, name="alfworld.translations",
                              description="fast-downward translations by (domain, problem)")
#: game key -> {planner operator: command text} for static templates (a few kB per game)
_COMMAND_MEMO = LRUCache(2048, name="alfworld.command_texts",
                         description="command texts of static templates per game")


def _pddl_modules():
    """Import TextWorld's PDDL modules lazily (they pull in fast-downward and tatsu)."""
    try:
        import_textworld()
        import fast_downward
        from textworld.envs.pddl import logic as pddl_logic
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("ALFWorldEnv needs textworld[pddl] (fast-downward): pip install 'textworld[pddl]'") from err
    return fast_downward, pddl_logic


def _translate(domain: str, problem: str, optimize: bool):
    """Run fast-downward's PDDL -> SAS translation, restoring ``sys.argv`` that it overwrites."""
    fast_downward, _ = _pddl_modules()
    argv = list(sys.argv)
    try:
        return fast_downward.pddl2sas(domain, problem, verbose=False, optimize=optimize)
    finally:
        sys.argv[:] = argv


# ALFWorld games share alfred.twl2 and differ only in the "task" rule's text (add_task_to_grammar).
_TASK_RULE_RE = re.compile(r'("task"\s*:\s*\[\s*\{\s*"rhs"\s*:\s*")((?:[^"\\]|\\.)*)(")')
_TASK_MASK = "DERL_GYM_TASK_PLACEHOLDER"


def _parse_logic(domain: str, grammar: str):
    _, pddl_logic = _pddl_modules()
    key = _digest(domain, grammar)
    logic = _LOGIC_CACHE.get(key)
    if logic is None:
        logic = pddl_logic.GameLogic(domain=domain, grammar=grammar)
        _LOGIC_CACHE.put(key, logic)
    return logic


def get_logic(game: GameFile):
    """Return the TextWorld ``GameLogic`` of the game's domain and grammar (memoised).

    When the grammar has exactly one ``"task"`` rule (every ALFWorld grammar does: it is
    ``alfred.twl2`` with the task text filled in), the rest of the grammar is parsed once per
    process and only the task rule is parsed per game; the result equals a full parse.

    Example:
        >>> from derl_gym.envs.alfworld.engine import _example_game, get_logic
        >>> game = _example_game()
        >>> logic = get_logic(game)
        >>> get_logic(game) is logic, "gotolocation" in logic.actions, logic.actions["gotolocation"].template
        (True, True, 'go to [{r.name | receptacleatlocation(r:receptacle, lend:location)}]')
        >>> [str(symbol) for symbol in logic.grammar._rules["task"][0].rhs]   # this game's own task rule
        ['Your task is to: put some book on drawer.']
    """
    key = _digest(game.pddl_domain, game.grammar)
    logic = _LOGIC_CACHE.get(key)
    if logic is not None:
        return logic
    matches = list(_TASK_RULE_RE.finditer(game.grammar))
    if len(matches) != 1:
        return _parse_logic(game.pddl_domain, game.grammar)
    m = matches[0]
    try:
        task_rhs = json.loads('"' + m.group(2) + '"')
    except ValueError:
        return _parse_logic(game.pddl_domain, game.grammar)
    masked = game.grammar[:m.start(2)] + _TASK_MASK + game.grammar[m.end(2):]
    base = _parse_logic(game.pddl_domain, masked)
    rules = base.grammar._rules.get("task", [])
    if len(rules) != 1 or "".join(str(sym) for sym in rules[0].rhs) != _TASK_MASK:
        return _parse_logic(game.pddl_domain, game.grammar)
    from textworld.envs.pddl import textgen

    logic = copy.copy(base)
    logic.grammar = textgen.ContextSensitiveGrammar()
    logic.grammar.update(base.grammar)
    logic.grammar._rules["task"] = [textgen.ProductionRule(
        lhs="task", rhs=textgen._parse_and_convert(task_rhs, rule_name="symbols"),
        weight=rules[0].weight, condition=rules[0].condition)]
    _LOGIC_CACHE.put(key, logic)
    return logic


#: set to "0" to disable the on-disk cache of SAS translations.
SAS_CACHE_ENV = "DERL_GYM_ALFWORLD_SAS_CACHE"


def sas_cache_dir() -> Path | None:
    """Return the folder of the on-disk SAS translation cache, or ``None`` when disabled.

    ``$DERL_GYM_CACHE/alfworld/sas`` (default ``~/.cache/derl_gym/alfworld/sas``); disabled by
    ``DERL_GYM_ALFWORLD_SAS_CACHE=0``.

    Example:
        >>> import os
        >>> from derl_gym.envs.alfworld.engine import SAS_CACHE_ENV, sas_cache_dir
        >>> saved = {key: os.environ.get(key) for key in ("DERL_GYM_CACHE", SAS_CACHE_ENV)}
        >>> os.environ["DERL_GYM_CACHE"], os.environ[SAS_CACHE_ENV] = "/data/cache", "1"
        >>> sas_cache_dir().as_posix()
        '/data/cache/alfworld/sas'
        >>> os.environ[SAS_CACHE_ENV] = "off"
        >>> sas_cache_dir() is None
        True
        >>> for key, value in saved.items():
        ...     _ = os.environ.pop(key, None) if value is None else os.environ.update({key: value})
    """
    if os.environ.get(SAS_CACHE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    base = os.environ.get("DERL_GYM_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "derl_gym") / "alfworld" / "sas"


def _fd_version() -> str:
    try:
        from importlib.metadata import version

        return version("fast-downward-textworld")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def _parse_task(domain: str, problem: str):
    """Parse and normalise the PDDL task (what ``pddl2sas`` does before translating), restoring argv."""
    argv = list(sys.argv)
    try:
        sys.argv[:] = ["translate.py", "domain", "task"]
        from fast_downward.translate import normalize
        from fast_downward.translate.pddl_parser import lisp_parser, parsing_functions

        task = parsing_functions.parse_task(lisp_parser.parse_nested_list(domain.split("\n")),
                                            lisp_parser.parse_nested_list(problem.split("\n")))
        normalize.normalize(task)
        return task
    finally:
        sys.argv[:] = argv


def _read_sas(path: Path) -> tuple[str, str] | None:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        return data["sas"], data["sas_replan"]
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _write_sas(path: Path, sas: str, sas_replan: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sas-", dir=path.parent)
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(json.dumps({"sas": sas, "sas_replan": sas_replan}).encode("utf-8"))
        os.replace(tmp, path)
    except OSError:
        logger.debug("could not write the SAS cache file %s", path, exc_info=True)


def get_translation(game: GameFile):
    """Return the ``(task, sas, sas_replan)`` fast-downward translation of the game (memoised).

    In-process results are kept in an LRU table. The two SAS texts (the expensive part: about
    0.1-0.4 s per game) are also stored on disk under :func:`sas_cache_dir`, keyed by the domain,
    the problem and the fast-downward version, so that other processes (inner-loop jobs) only
    re-parse the PDDL task (a few ms). The translation is deterministic (it does not depend on the
    hash seed), so the cached texts equal a fresh translation.

    Example:
        >>> from derl_gym.envs.alfworld.engine import _example_game, get_translation
        >>> game = _example_game()
        >>> task, sas, sas_replan = get_translation(game)
        >>> get_translation(game)[1] is sas, sas.split()[:3], sas_replan.split()[:3]
        (True, ['begin_version', '3', 'end_version'], ['begin_version', '3', 'end_version'])
        >>> type(task).__name__, "gotolocation" in {action.name for action in task.actions}
        ('Task', True)
    """
    key = _digest(game.pddl_domain, game.pddl_problem)
    value = _TRANSLATION_CACHE.get(key)
    if value is not None:
        return value
    folder = sas_cache_dir()
    path = folder / f"{_digest(_fd_version(), game.pddl_domain, game.pddl_problem)}.json.gz" if folder else None
    cached = _read_sas(path) if path is not None and path.is_file() else None
    if cached is not None:
        value = (_parse_task(game.pddl_domain, game.pddl_problem), *cached)
    else:
        task, sas = _translate(game.pddl_domain, game.pddl_problem, optimize=False)
        _, sas_replan = _translate(game.pddl_domain, game.pddl_problem, optimize=True)
        value = (task, sas, sas_replan)
        if path is not None:
            _write_sas(path, sas, sas_replan)
    _TRANSLATION_CACHE.put(key, value)
    return value


# ----------------------------------------------------------------------------- state digests

def _fact_text(fact: Any) -> str:
    return fact.name + "(" + ",".join(v.name for v in fact.arguments) + ")"


def state_digests(facts: Iterable[Any]) -> tuple[bytes, bytes]:
    """Return ``(state_key, world_key)`` digests of a TextWorld fact set.

    ``state_key`` covers every fact (the cache key); ``world_key`` covers the positive facts other
    than the bookkeeping predicates in :data:`BOOKKEEPING_PREDICATES` (used for ``state_changed``).
    A fact is written ``name(arg1,arg2)`` (object names are unique within a game).

    Args:
        facts: TextWorld propositions (``name``, ``arguments`` with ``name``, ``is_negation``).

    Returns:
        Two 16-byte digests; neither depends on the order of ``facts``.

    Example:
        >>> from textworld.logic import Proposition, Variable
        >>> from derl_gym.envs.alfworld.engine import state_digests
        >>> book, drawer = Variable("book_1", "object"), Variable("drawer_1", "receptacle")
        >>> facts = [Proposition("inreceptacle", [book, drawer]), Proposition("opened", [drawer])]
        >>> state, world = state_digests(facts)
        >>> len(state), state_digests(facts[::-1]) == (state, world)
        (16, True)
        >>> looked = state_digests([*facts, Proposition("examined", [drawer])])   # bookkeeping only
        >>> looked[0] != state, looked[1] == world
        (True, True)
        >>> negated = state_digests([*facts, Proposition("not_opened", [book])])   # explicit not_* fact
        >>> negated[0] != state, negated[1] == world
        (True, True)
    """
    full, world = [], []
    for fact in facts:
        text = _fact_text(fact)
        full.append(text)
        if not fact.is_negation and fact.name not in BOOKKEEPING_PREDICATES:
            world.append(text)
    full.sort()
    world.sort()
    return (hashlib.blake2b("\n".join(full).encode(), digest_size=16).digest(),
            hashlib.blake2b("\n".join(world).encode(), digest_size=16).digest())


_QUERY_PREDICATE_RE = re.compile(r"([A-Za-z_][\w-]*)\s*\(")


def static_command_actions(logic, task) -> frozenset[str]:
    """Return the action names whose command text depends only on the action's arguments.

    A command template qualifies when it uses no grammar nonterminal (``#...#``) and every
    predicate its queries mention is static: no action effect and no axiom of the translated task
    changes it (e.g. ``receptacleatlocation`` in ALFWorld's ``go to`` template). Their commands can
    be memoised per planner operator.

    Args:
        logic: a TextWorld ``GameLogic`` (:func:`get_logic`).
        task: the translated fast-downward task (the first item of :func:`get_translation`).

    Returns:
        The names of the qualifying actions of ``logic``.

    Example:
        >>> from derl_gym.envs.alfworld.engine import _example_game, get_logic, get_translation, static_command_actions
        >>> game = _example_game()
        >>> logic, task = get_logic(game), get_translation(game)[0]
        >>> static = static_command_actions(logic, task)
        >>> "gotolocation" in static, static == frozenset(logic.actions)   # every ALFWorld template qualifies
        (True, True)
        >>> changing = {effect.literal.predicate for action in task.actions for effect in action.effects}
        >>> "receptacleatlocation" in changing, "atlocation" in changing    # "go to" reads only a static fact
        (False, True)
    """
    changing = {eff.literal.predicate for action in task.actions for eff in action.effects}
    changing |= {axiom.name for axiom in getattr(task, "axioms", [])}
    static = set()
    for name, action in logic.actions.items():
        template = action.template
        if "#" in template:
            continue
        predicates = set(_QUERY_PREDICATE_RE.findall(template.split("|", 1)[1])) if "|" in template else set()
        if not predicates & changing:
            static.add(name)
    return frozenset(static)


@dataclass(frozen=True)
class StateInfo:
    """What the env reports about one game state (cached per ``(game, state_key)``).

    ``commands`` are TextWorld's admissible commands (sorted, de-duplicated, "help" included);
    ``plan_length`` is the planner's remaining plan length (0 when won, :data:`NO_PLAN` when none).
    ``state_key`` / ``world_key`` are the digests of :func:`state_digests`.

    Example:
        >>> from derl_gym.envs.alfworld.engine import StateInfo
        >>> info = StateInfo(b"state", b"world", ("go to desk 1", "help", "look"), won=False, plan_length=3)
        >>> info.commands_without_help, info == StateInfo(b"state", b"world", info.commands, False, 3)
        (('go to desk 1', 'look'), True)

        The engines report one for their current state (here the start of a small cached game):

        >>> from derl_gym.envs.alfworld.engine import FastEngine, _example_game
        >>> engine = FastEngine()
        >>> engine.load(_example_game())
        >>> start = engine.state_info()
        >>> start.won, start.plan_length, start.commands_without_help[:2]
        (False, 5, ('go to desk 1', 'go to drawer 1'))
        >>> engine.close()
    """

    state_key: bytes
    world_key: bytes
    commands: tuple[str, ...]
    won: bool
    plan_length: int

    @functools.cached_property
    def commands_without_help(self) -> tuple[str, ...]:
        """``commands`` without ``"help"`` (what the env reports as admissible), computed once."""
        return tuple(c for c in self.commands if c != "help")


@dataclass(frozen=True)
class Transition:
    """A cached step: the next state's key, the feedback text and the planner operator applied.

    :class:`TransitionCache` keeps one per ``(game, state, command)``; ``operator`` is what
    :meth:`FastEngine.replay` takes to rebuild the state.

    Example:
        >>> import dataclasses
        >>> from derl_gym.envs.alfworld.engine import Transition
        >>> step = Transition(next_state=b"next", feedback="You arrive at desk 1.", operator="gotolocation a b desk")
        >>> step.feedback, step == Transition(b"next", "You arrive at desk 1.", "gotolocation a b desk")
        ('You arrive at desk 1.', True)
        >>> step.feedback = "changed"
        Traceback (most recent call last):
            ...
        dataclasses.FrozenInstanceError: cannot assign to field 'feedback'
    """

    next_state: bytes
    feedback: str
    operator: str


#: set to "0" to disable the on-disk transition cache (it is also off with DERL_GYM_INNER_FAST=0).
TRANSITION_CACHE_ENV = "DERL_GYM_ALFWORLD_TRANSITION_CACHE"
#: format version of the on-disk transition files (bump when StateInfo / Transition change).
TRANSITION_FILE_VERSION = 1


def transition_cache_dir() -> Path | None:
    """Return the folder of the on-disk transition cache, or ``None`` when disabled.

    ``$DERL_GYM_CACHE/alfworld/transitions/<versions>`` (default under ``~/.cache/derl_gym``), where
    ``<versions>`` digests the file format and the textworld, alfworld and fast-downward versions
    (their grammar and planner produce the texts and plans). Disabled by
    ``DERL_GYM_ALFWORLD_TRANSITION_CACHE=0`` or ``DERL_GYM_INNER_FAST=0``.

    Example:
        >>> import os
        >>> from derl_gym.envs.alfworld.engine import TRANSITION_CACHE_ENV, transition_cache_dir
        >>> from derl_gym.utils.fastpath import FAST_PATH_ENV
        >>> saved = {key: os.environ.get(key) for key in ("DERL_GYM_CACHE", TRANSITION_CACHE_ENV, FAST_PATH_ENV)}
        >>> os.environ.update({"DERL_GYM_CACHE": "/data/cache", TRANSITION_CACHE_ENV: "1", FAST_PATH_ENV: "1"})
        >>> folder = transition_cache_dir()
        >>> folder.parent.as_posix(), len(folder.name)      # the last part digests format and package versions
        ('/data/cache/alfworld/transitions', 16)
        >>> os.environ[FAST_PATH_ENV] = "0"
        >>> transition_cache_dir() is None
        True
        >>> for key, value in saved.items():
        ...     _ = os.environ.pop(key, None) if value is None else os.environ.update({key: value})
    """
    if not _transition_cache_enabled():
        return None
    base = os.environ.get("DERL_GYM_CACHE")
    root = (Path(base) if base else Path.home() / ".cache" / "derl_gym") / "alfworld" / "transitions"
    return root / _versions_tag()


def _transition_cache_enabled() -> bool:
    return (os.environ.get(TRANSITION_CACHE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
            and fast_path_enabled())


@lru_cache(maxsize=1)
def _versions_tag() -> str:
    """Digest of the file format and the textworld, alfworld and fast-downward versions (computed once)."""
    return _digest(str(TRANSITION_FILE_VERSION), _package_version("textworld"), _package_version("alfworld"),
                   _fd_version())[:16]


def _package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


class _BackedLRU(LRUCache):
    """An :class:`LRUCache` whose :meth:`get` asks ``fallback(key)`` on a miss (and keeps the answer).

    The transition cache's tables use it to build an entry from the rows read from disk only when
    it is first asked for (and again after an eviction), instead of materialising every row of a
    game's file when the game is first reset. A fallback answer counts as a hit; ``None`` from the
    fallback is a miss.
    """

    def __init__(self, maxsize: int, fallback: Any, name: str | None = None, description: str = "") -> None:
        super().__init__(maxsize, name=name, description=description)
        self._fallback = fallback

    def get(self, key: Any, default: Any = None) -> Any:
        """Return the entry for ``key`` (from memory, else built from the disk rows) or ``default``."""
        with self._lock:
            data = self._data
            if key in data:
                data.move_to_end(key)
                self.hits += 1
                return data[key]
        value = self._fallback(key)
        if value is None:
            with self._lock:
                self.misses += 1
            return default
        self.put(key, value)
        with self._lock:
            self.hits += 1
        return value


class TransitionCache:
    """Process-wide bounded LRU tables of game states and transitions, optionally backed by disk.

    ``states[(game_key, state_key)] -> StateInfo``, ``transitions[(game_key, state_key, command)] ->
    Transition`` and ``initial[game_key] -> (state_key, intro text)``. Entries are immutable, so
    sharing them between envs of one process is safe. The default bounds keep the tables under
    roughly 100 MB (a state is about 0.5 kB, a transition about 0.4 kB). ``name`` registers the
    three tables as process-wide caches (:func:`derl_gym.utils.lru.process_caches`).

    With ``folder`` (the global cache passes ``"auto"``: :func:`transition_cache_dir` at each use),
    entries also persist
    across processes: the first time a game is played in a process its file
    ``<folder>/<game key>.json.gz`` (plain JSON, no pickle) is read into the tables, new entries
    are journalled and :meth:`flush` (called when an env closes, and when the journal passes
    ``flush_every`` entries) merges them into the file, written atomically. The PDDL engine is
    deterministic, so a stored entry equals what the engine would compute; later inner runs on the
    same games then touch the engine only for states no run has reached before. A file keeps at
    most ``max_file_states`` states of its game.

    On the fast path (``$DERL_GYM_INNER_FAST``) a game's file is read into per-game row
    dictionaries (bounded by ``max_file_rows`` rows over all games, least recently reset games
    dropped first) and a :class:`StateInfo` / :class:`Transition` is built from its row only when
    it is first looked up, and rebuilt after the LRU table evicted it: an evicted state that is on
    disk never sends the env back to the engine. The old path materialises every row at load.

    Example:
        Entries written by one cache and flushed to its folder are read back by another (in another
        process, typically):

        >>> import tempfile
        >>> from derl_gym.envs.alfworld.engine import StateInfo, Transition, TransitionCache
        >>> start = StateInfo(b"s0", b"w0", ("go to desk 1", "help", "look"), won=False, plan_length=1)
        >>> end = StateInfo(b"s1", b"w1", ("help", "look"), won=True, plan_length=0)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     cache = TransitionCache(folder=folder)
        ...     cache.add_state("game", start); cache.add_state("game", end)
        ...     cache.add_transition("game", b"s0", "go to desk 1", Transition(b"s1", "You arrive at desk 1.", "op"))
        ...     cache.flush()                                  # writes <folder>/game.json.gz
        ...     other = TransitionCache(folder=folder)
        ...     other.ensure_loaded("game")
        ...     step = other.transitions.get(("game", b"s0", "go to desk 1"))
        ...     reached = other.states.get(("game", step.next_state))
        >>> step.feedback, reached == end, other.transitions.get(("game", b"s1", "look")) is None
        ('You arrive at desk 1.', True, True)
        >>> cache.stats()["states"], cache.stats()["transitions"]
        (2, 1)
    """

    def __init__(self, max_states: int = 50_000, max_transitions: int = 150_000, name: str | None = None,
                 folder: str | os.PathLike | None = None, flush_every: int = 20_000,
                 max_file_states: int = 20_000, max_file_rows: int = 4_000_000) -> None:
        label = (lambda table: f"{name}.{table}") if name else (lambda table: None)
        self._lazy = fast_path_enabled()
        #: game key -> (state rows by hex key, transition rows by (hex key, command)) read from disk
        self._rows: "OrderedDict[str, tuple[dict, dict]]" = OrderedDict()
        self._row_count = 0
        # a bound below the rows of the games a run resets (alfworld-l2's 240 games held 2.0M rows after
        # the Table 1 runs) makes every reset of a dropped game re-read its file: 1M thrashed there
        self.max_file_rows = int(max_file_rows)
        self.states = _BackedLRU(max_states, self._state_from_rows, name=label("states"),
                                 description="StateInfo by (game, state)")
        self.transitions = _BackedLRU(max_transitions, self._transition_from_rows, name=label("transitions"),
                                      description="Transition by (game, state, command)")
        self.initial = LRUCache(max(1024, max_states // 50), name=label("initial"),
                                description="(initial state key, intro text) by game")
        self._folder = folder if folder in (None, "auto") else Path(folder)  # type: ignore[arg-type]
        self.flush_every = int(flush_every)
        self.max_file_states = int(max_file_states)
        #: game keys whose file was read in this process (bounded: reading twice is harmless)
        self._loaded = LRUCache(8192, description="game keys read from disk")
        #: games whose rows were dropped by the max_file_rows bound (read again on their next reset)
        self._dropped: set[str] = set()
        self._journal: dict[str, dict[str, list]] = {}
        self._journal_size = 0
        self._lock = threading.Lock()

    # -- entries
    def add_state(self, game_key: str, state: StateInfo) -> None:
        """Cache ``state`` of game ``game_key`` (and journal it for the disk file)."""
        self.states.put((game_key, state.state_key), state)
        self._log(game_key, "states", [state.state_key.hex(), state.world_key.hex(), list(state.commands),
                                       bool(state.won), int(state.plan_length)])

    def add_transition(self, game_key: str, state_key: bytes, command: str, transition: Transition) -> None:
        """Cache ``transition`` from ``state_key`` by ``command`` (and journal it)."""
        self.transitions.put((game_key, state_key, command), transition)
        self._log(game_key, "transitions", [state_key.hex(), command, transition.next_state.hex(),
                                            transition.feedback, transition.operator])

    def add_initial(self, game_key: str, state_key: bytes, intro: str) -> None:
        """Cache the initial state key and intro text of game ``game_key`` (and journal them)."""
        self.initial.put(game_key, (state_key, intro))
        self._log(game_key, "initial", [state_key.hex(), intro])

    @property
    def folder(self) -> Path | None:
        """The folder of the disk files (``folder="auto"``: :func:`transition_cache_dir` now), or ``None``."""
        return transition_cache_dir() if self._folder == "auto" else self._folder  # type: ignore[return-value]

    def _log(self, game_key: str, table: str, row: list) -> None:
        if self._folder is None or (self._folder == "auto" and not _transition_cache_enabled()):
            return
        with self._lock:
            journal = self._journal.setdefault(game_key, {"states": [], "transitions": [], "initial": []})
            journal[table].append(row)
            self._journal_size += 1
            full = self._journal_size >= self.flush_every
        if full:
            self.flush()

    # -- disk
    def _path(self, game_key: str, folder: Path) -> Path:
        return folder / f"{game_key}.json.gz"

    def _state_from_rows(self, key: tuple[str, bytes]) -> StateInfo | None:
        rows = self._rows.get(key[0])
        if rows is None:
            return None
        row = rows[0].get(key[1].hex())
        if row is None:
            return None
        try:
            _, wk, commands, won, plan = row
            return StateInfo(key[1], bytes.fromhex(wk), tuple(commands), bool(won), int(plan))
        except (TypeError, ValueError) as err:
            logger.debug("ignoring a malformed state row of game %s: %s", key[0], err)
            return None

    def _transition_from_rows(self, key: tuple[str, bytes, str]) -> Transition | None:
        rows = self._rows.get(key[0])
        if rows is None:
            return None
        row = rows[1].get((key[1].hex(), key[2]))
        if row is None:
            return None
        try:
            _, _, nk, feedback, operator = row
            return Transition(bytes.fromhex(nk), feedback, operator)
        except (TypeError, ValueError) as err:
            logger.debug("ignoring a malformed transition row of game %s: %s", key[0], err)
            return None

    def _keep_rows(self, game_key: str, data: dict) -> None:
        """Index the file's rows by key (lazy path); drop the least recently loaded games beyond the bound."""
        try:
            # one string object per distinct text of the file: the JSON decoder makes a new one for every
            # occurrence of a state key, command or feedback (on alfworld-tiny this keeps ~40% of the memory)
            same = {}.setdefault
            states = {}
            for row in data.get("states", []):
                row[0] = same(row[0], row[0])
                row[2] = [same(c, c) for c in row[2]]
                states[row[0]] = row
            transitions = {}
            for row in data.get("transitions", []):
                row[0], row[1], row[2] = same(row[0], row[0]), same(row[1], row[1]), same(row[2], row[2])
                row[3], row[4] = same(row[3], row[3]), same(row[4], row[4])
                transitions[(row[0], row[1])] = row
        except (TypeError, KeyError, IndexError) as err:
            logger.debug("ignoring malformed transition file of game %s: %s", game_key, err)
            return
        with self._lock:
            old = self._rows.pop(game_key, None)
            if old is not None:
                self._row_count -= len(old[0]) + len(old[1])
            self._rows[game_key] = (states, transitions)
            self._row_count += len(states) + len(transitions)
            while self._row_count > self.max_file_rows and len(self._rows) > 1:
                dropped_key, dropped = self._rows.popitem(last=False)
                self._row_count -= len(dropped[0]) + len(dropped[1])
                self._dropped.add(dropped_key)

    def ensure_loaded(self, game_key: str) -> None:
        """Read game ``game_key``'s file into the tables once per process (no-op without a folder)."""
        if game_key in self._loaded and game_key not in self._dropped:
            if self._lazy and game_key in self._rows:
                with self._lock:
                    if game_key in self._rows:
                        self._rows.move_to_end(game_key)
            return
        folder = self.folder
        if folder is None:
            return
        self._loaded.put(game_key, True)
        self._dropped.discard(game_key)
        data = _read_transition_file(self._path(game_key, folder))
        if data is None:
            return
        if self._lazy:
            self._keep_rows(game_key, data)
            initial = data.get("initial")
            try:
                if initial and game_key not in self.initial:
                    self.initial.put(game_key, (bytes.fromhex(initial[0]), initial[1]))
            except (TypeError, ValueError, IndexError) as err:
                logger.debug("ignoring malformed initial row of game %s: %s", game_key, err)
            return
        try:
            for sk, wk, commands, won, plan in data.get("states", []):
                key = (game_key, bytes.fromhex(sk))
                if key not in self.states:
                    self.states.put(key, StateInfo(key[1], bytes.fromhex(wk), tuple(commands), bool(won), int(plan)))
            for sk, command, nk, feedback, operator in data.get("transitions", []):
                key = (game_key, bytes.fromhex(sk), command)
                if key not in self.transitions:
                    self.transitions.put(key, Transition(bytes.fromhex(nk), feedback, operator))
            initial = data.get("initial")
            if initial and game_key not in self.initial:
                self.initial.put(game_key, (bytes.fromhex(initial[0]), initial[1]))
        except (TypeError, ValueError) as err:
            logger.debug("ignoring malformed transition file of game %s: %s", game_key, err)

    def flush(self) -> None:
        """Merge the journalled entries into their games' files (atomic replace); returns nothing."""
        folder = self.folder
        with self._lock:
            journal, self._journal, self._journal_size = self._journal, {}, 0
        if folder is None:
            return
        for game_key, new in journal.items():
            path = self._path(game_key, folder)
            data = _read_transition_file(path) or {}
            states = {row[0]: row for row in data.get("states", [])}
            for row in new["states"]:
                if len(states) >= self.max_file_states:
                    break
                states.setdefault(row[0], row)
            known = set(states)
            transitions = {(row[0], row[1]): row for row in data.get("transitions", [])}
            for row in new["transitions"]:
                if row[0] in known and row[2] in known:
                    transitions.setdefault((row[0], row[1]), row)
            initial = data.get("initial") or (new["initial"][0] if new["initial"] else None)
            _write_transition_file(path, {"version": TRANSITION_FILE_VERSION, "states": list(states.values()),
                                          "transitions": list(transitions.values()), "initial": initial})

    def clear(self) -> None:
        """Drop every in-memory entry and the journal (the disk files stay)."""
        self.states.clear()
        self.transitions.clear()
        self.initial.clear()
        self._loaded.clear()
        self._dropped.clear()
        with self._lock:
            self._rows.clear()
            self._row_count = 0
        with self._lock:
            self._journal, self._journal_size = {}, 0

    def stats(self) -> dict[str, int]:
        """Return sizes and hit/miss counts of the tables."""
        return {"states": len(self.states), "transitions": len(self.transitions), "file_rows": self._row_count,
                "transition_hits": self.transitions.hits, "transition_misses": self.transitions.misses,
                "initial_hits": self.initial.hits, "initial_misses": self.initial.misses}


def _read_transition_file(path: Path) -> dict | None:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as err:
        logger.debug("ignoring unreadable transition file %s: %s", path, err)
        return None
    if not isinstance(data, dict) or data.get("version") != TRANSITION_FILE_VERSION:
        return None
    return data


def _write_transition_file(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tr-", dir=path.parent)
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=3) as f:
            f.write(json.dumps(data, separators=(",", ":")).encode("utf-8"))
        os.replace(tmp, path)
    except OSError:
        logger.debug("could not write the transition cache file %s", path, exc_info=True)


#: the default, process-wide cache used by :class:`~derl_gym.envs.alfworld.env.ALFWorldEnv`.
GLOBAL_CACHE = TransitionCache(name="alfworld.transition_cache", folder="auto")


def clear_caches() -> None:
    """Clear the global transition cache and the parsed-logic / translation / game-file memos; returns nothing.

    The disk caches (:func:`sas_cache_dir`, :func:`transition_cache_dir`) stay.

    Example:
        >>> from derl_gym.envs.alfworld.engine import GLOBAL_CACHE, _example_game, clear_caches, load_game_file
        >>> game = _example_game()
        >>> load_game_file(game.path) is game                # memoised
        True
        >>> clear_caches()
        >>> load_game_file(game.path) is game, load_game_file(game.path) == game, GLOBAL_CACHE.stats()["states"]
        (False, True, 0)
    """
    GLOBAL_CACHE.clear()
    _LOGIC_CACHE.clear()
    _TRANSLATION_CACHE.clear()
    _COMMAND_MEMO.clear()
    _GAME_FILE_CACHE.clear()
    _PARSE_MEMO.clear()
    _QUERY_MEMO.clear()


def _example_game() -> GameFile:
    """Return the first game of the small cached ``generator="tiny"`` train split (the examples' game).

    The games are generated on first use and cached on disk, as in
    :class:`~derl_gym.envs.alfworld.env.ALFWorldEnv`'s example; this one is "put some book on drawer"
    (a five-step walkthrough).
    """
    from derl_gym.envs.alfworld.splits import get_split_games

    return load_game_file(get_split_games("L0", "train", generator="tiny")[0])


# ----------------------------------------------------------------------------- text derivation

#: grammar right-hand-side text -> TextWorld's parsed symbols (grammar rules, command templates and
#: per-game task texts: a few hundred shared entries plus one per game; ~2-10 kB each)
_PARSE_MEMO: LRUCache = LRUCache(16_384, name="alfworld.grammar_parses",
                                 description="parsed grammar right-hand sides by text")
#: query expression text -> parsed conjunctive query Rule (the grammar's conditions; ~1-4 kB each)
_QUERY_MEMO: LRUCache = LRUCache(16_384, name="alfworld.grammar_queries",
                                 description="parsed grammar condition queries by text")


def _parsed_symbols(text: str) -> list:
    """Return TextWorld's parse of a grammar right-hand side (memoised; the symbols are never mutated)."""
    symbols = _PARSE_MEMO.get(text)
    if symbols is None:
        from textworld.envs.pddl import textgen

        symbols = textgen._parse_and_convert(text, rule_name="symbols")
        _PARSE_MEMO.put(text, symbols)
    return symbols


def _conjunctive_query(expression: str):
    """Return ``Rule.parse_conjunctive_query(expression)`` (memoised)."""
    rule = _QUERY_MEMO.get(expression)
    if rule is None:
        from textworld.logic import Rule

        rule = Rule.parse_conjunctive_query(expression)
        _QUERY_MEMO.put(expression, rule)
    return rule


def _copy_context(context: dict) -> dict:
    # TextWorld deep-copies "variables" and "mapping"; their values (EntityInfo, Variable) are never
    # mutated during a derivation, so copying the two dicts gives the same result.
    return {"state": context["state"], "facts": context["facts"], "variables": dict(context["variables"]),
            "mapping": dict(context["mapping"]), "entity_infos": context["entity_infos"]}


def derive_text(grammar, start: str, context: dict) -> str:
    """Return ``grammar.derive(start, context)`` as TextWorld computes it, without re-parsing.

    Same algorithm as ``textworld.envs.pddl.textgen.ContextSensitiveGrammar.derive`` (first
    applicable production, conditional queries over the state, list joining); the rule texts and
    queries are parsed once per process and symbols carry their context beside them instead of
    being deep-copied.

    Args:
        grammar: a TextWorld ``ContextSensitiveGrammar`` (``get_logic(game).grammar``).
        start: the text to expand (``"#intro#"``, a command template, a feedback rule).
        context: ``state``, ``facts``, ``variables``, ``mapping`` and ``entity_infos``, as TextWorld's.

    Returns:
        The derived text.

    Example:
        The intro text of a small cached game, equal to TextWorld's own derivation:

        >>> from derl_gym.envs.alfworld.engine import FastEngine, _example_game, derive_text, task_line
        >>> engine = FastEngine()
        >>> engine.load(_example_game())
        >>> grammar, context = engine._logic.grammar, engine._context({}, {})
        >>> intro = derive_text(grammar, "#intro#", context)
        >>> intro == grammar.derive("#intro#", context), task_line(intro)
        (True, 'Your task is to: put some book on drawer.')
        >>> engine.close()
    """
    from textworld.envs.pddl import textgen

    stack = [(sym, _copy_context(context)) for sym in reversed(_parsed_symbols(start))]
    derived: list[str] = []
    while stack:
        symbol, ctx = stack.pop()
        kind = type(symbol)
        if kind is textgen.TerminalSymbol:
            derived.append(str(symbol))
        elif kind is textgen.NonterminalSymbol:
            stack.extend(reversed(_replace(grammar, symbol, ctx)))
        elif kind is textgen.ConditionalSymbol:
            stack.extend(reversed(_conditional(symbol, ctx)))
        elif kind is textgen.ListSymbol and type(symbol.symbol) is textgen.ConditionalSymbol:
            stack.extend(reversed(_display_list(_conditional(symbol.symbol, ctx), ctx)))
        elif kind is textgen.EvalSymbol:
            stack.extend((s, ctx) for s in reversed(symbol.derive(ctx)))
        else:  # anything else: let TextWorld derive it
            import copy

            clone = copy.copy(symbol)
            clone.context = textgen.copy_context(ctx)
            stack.extend((s, s.context) for s in reversed(clone.derive()))
    return "".join(derived)


def _replace(grammar, symbol, ctx: dict) -> list:
    from textworld.envs.pddl import textgen

    rules = grammar._rules.get(str(symbol))
    if not rules:
        raise textgen.CSGUnknownSymbolError(symbol)
    for rule in rules:
        if not rule.condition:
            break
        query = _conjunctive_query(rule.condition)
        if next(iter(ctx["state"].all_assignments(query, ctx["mapping"])), None) is not None:
            break
    else:
        raise IndexError(f"no applicable production for #{symbol}#")
    return [(s, _copy_context(ctx)) for s in rule.rhs]


def _conditional(symbol, ctx: dict) -> list:
    if len(ctx) == 0:
        raise ValueError("Empty context")
    context = _copy_context(ctx)
    contexts = [context]
    if symbol.given:
        rule = _conjunctive_query(symbol.given)
        contexts = []
        for mapping in context["state"].all_assignments(rule, context["mapping"]):
            c = _copy_context(context)
            c["variables"].update({ph.name: c["entity_infos"][var.name] for ph, var in mapping.items()})
            c["mapping"].update(mapping)
            contexts.append(c)
    return [(symbol.expression, c) for c in contexts]


def _display_list(items: list, ctx: dict) -> list:
    from textworld.envs.pddl import textgen

    if len(items) == 0:
        return [(textgen.NonterminalSymbol("list_empty"), ctx)]
    if len(items) == 1:
        return [items[0]]
    out = []
    for item in items[:-1]:
        out.append(item)
        out.append((textgen.NonterminalSymbol("list_separator"), ctx))
    out[-1] = (textgen.NonterminalSymbol("list_last_separator"), ctx)
    out.append(items[-1])
    return out


# ----------------------------------------------------------------------------- engines

def _demangled_entity_infos(state) -> dict:
    """Entity infos as ``PddlEnv._get_entity_infos`` builds them, renamed by alfworld's ``Demangler``.

    Names are stripped (:func:`normalize_command`), as :func:`make_reference_env` does.
    """
    import_textworld()
    from alfworld.agents.utils.misc import Demangler
    from textworld.generator.game import EntityInfo

    infos = {v.name: EntityInfo(v.name, v.type) for fact in state.facts for v in fact.arguments}
    for info in infos.values():
        info.name = info.id
        info.definite = "the"
        info.indefinite = "a"
    demangler = Demangler(game_infos=infos, shuffle=False)
    for info in infos.values():
        info.name = normalize_command(demangler.demangle_alfred_name(info.id))
    return infos


#: fast-downward library copies not in use; it never holds more copies than engines were open at once
_LIB_POOL: list = []


def _acquire_lib(fast_downward):
    """Return a fast-downward library copy from the process pool (or load a new one)."""
    with _LOCK:
        if _LIB_POOL:
            return _LIB_POOL.pop()
    return fast_downward.load_lib()


def _release_lib(lib) -> None:
    """Give a library copy back to the pool.

    Copies are reused rather than unloaded: ``dlclose`` on fast-downward's C++ library followed by
    loading another copy crashed the process in testing (TextWorld itself never unloads them).
    """
    with _LOCK:
        _LIB_POOL.append(lib)


class FastEngine:
    """TextWorld's PDDL game logic driven directly, with memoised parsing and cheap replay.

    The produced texts, admissible commands, goal checks and plans are those of TextWorld's
    ``PddlEnv`` + alfworld's ``AlfredDemangler`` (the tests compare them with :class:`ReferenceEngine`).
    One engine owns one copy of the fast-downward library and can load any number of games in turn.

    Example:
        Play a small cached game's walkthrough, then rebuild a state from planner operators:

        >>> from derl_gym.envs.alfworld.engine import FastEngine, _example_game, task_line
        >>> game = _example_game()
        >>> engine = FastEngine()
        >>> engine.load(game)
        >>> task_line(engine.reset()), engine.plan_length(), "go to sidetable 1" in engine.admissible_commands()
        ('Your task is to: put some book on drawer.', 5, True)
        >>> feedback, operator = engine.step("go to  sidetable 1")      # commands are normalised
        >>> feedback, operator.split()[:2]                             # the planner operator applied
        ('You arrive at sidetable 1. On the sidetable 1, you see a book 1.', ['gotolocation', 'agent1'])
        >>> for command in game.walkthrough[1:]:
        ...     feedback, operator = engine.step(command)
        >>> feedback, engine.won(), engine.plan_length(), len(engine.history)
        ('You move the book 1 to the drawer 1.', True, 0, 5)
        >>> won_key, operators = engine.state_key(), list(engine.history)
        >>> _ = engine.reset()
        >>> engine.replay(operators)                # no text derived
        >>> engine.state_key() == won_key, engine.won()
        (True, True)
        >>> engine.close()
    """

    def __init__(self) -> None:
        fast_downward, _ = _pddl_modules()
        self._fd = fast_downward
        self._lib = _acquire_lib(fast_downward)
        self.game: GameFile | None = None
        self._state = None
        self._actions: list | None = None
        self._commands: list[str] | None = None
        self._entity_infos: dict = {}
        self._mapping: dict = {}
        #: planner operators applied since the last reset (what :meth:`replay` takes).
        self.history: list[str] = []
        #: fast path ($DERL_GYM_INNER_FAST): digests computed once per state, prefix replay
        self._fast = fast_path_enabled()
        self._digests: tuple[bytes, bytes] | None = None

    # -- lifecycle
    def load(self, game: GameFile) -> None:
        """Load ``game`` (memoised parse and translation) and put it in its initial state."""
        self.game = game
        self._logic = get_logic(game)
        self._translation = get_translation(game)
        self._static_actions = static_command_actions(self._logic, self._translation[0])
        memo = _COMMAND_MEMO.get(game.key)
        if memo is None:
            memo = {}
            _COMMAND_MEMO.put(game.key, memo)
        self._command_memo: dict[str, str] = memo
        self._new_state()
        self._entity_infos = _demangled_entity_infos(self._state)
        self._mapping = {k: info.name for k, info in self._entity_infos.items()}

    def _new_state(self) -> None:
        """Build a ``PddlState`` in the initial state without re-running the translation."""
        from collections import Counter, defaultdict

        from textworld.logic import Proposition, Type, Variable

        _, pddl_logic = _pddl_modules()
        task, sas, sas_replan = self._translation
        state = pddl_logic.PddlState.__new__(pddl_logic.PddlState)
        # Same fields and order of operations as PddlState.__init__, minus the translation.
        state._facts = defaultdict(set)
        state._vars_by_name = {}
        state._vars_by_type = defaultdict(set)
        state._var_counts = Counter()
        state._logic = self._logic
        state.downward_lib = self._lib
        state.pddl_problem = self.game.pddl_problem
        state.task, state.sas, state.sas_replan = task, sas, sas_replan
        state._actions = {a.name: a for a in task.actions}
        for type_ in task.types:
            try:
                self._logic.types.add(Type(type_.name, type_.supertype_names))
            except ValueError:
                pass
        self._lib.load_sas(sas.encode("utf-8"))
        self._lib.load_sas_replan(sas_replan.encode("utf-8"))
        state.name2type = {o.name: o.type_name for o in task.objects}

        fd = self._fd

        def _atom2proposition(atom):
            if isinstance(atom, fd.translate.pddl.conditions.Atom):
                if atom.predicate == "=":
                    return None
                return Proposition(atom.predicate, [Variable(arg, state.name2type[arg]) for arg in atom.args])
            if isinstance(atom, fd.translate.pddl.f_expression.Assign):
                if atom.fluent.symbol == "total-cost":
                    return None
                name = "{}".format(atom.expression.value)
                if str.isdigit(name):
                    return None
                return Proposition(name, [Variable(arg, state.name2type[arg]) for arg in atom.fluent.args])
            return None

        state.add_facts(list(filter(None, (_atom2proposition(a) for a in task.init))))
        size = self._lib.get_state_size()
        atoms = (pddl_logic.Atom * size)()
        self._lib.get_state(atoms)
        facts = [atom.get_fact(state.name2type) for atom in atoms]
        state.add_facts([f for f in facts if not f.is_negation])
        self._state = state
        self._actions = None
        self._commands = None
        self._digests = None
        self.history = []

    def reset(self) -> str:
        """Return to the initial state; returns the intro text (``#intro#``)."""
        self._new_state()
        return derive_text(self._logic.grammar, "#intro#", self._context({}, {}))

    def close(self) -> None:
        """Return the fast-downward library copy to the process pool (the engine is unusable after)."""
        if self._lib is not None:
            _release_lib(self._lib)
            self._lib = None
            self._state = None
            self.game = None

    # -- queries
    def _context(self, variables: dict, mapping: dict) -> dict:
        return {"state": self._state, "facts": list(self._state.facts), "variables": variables,
                "mapping": mapping, "entity_infos": self._entity_infos}

    def _gather_commands(self) -> None:
        actions = list(self._state.all_applicable_actions())
        operators = self._state._operators
        facts = None
        commands = []
        for action in actions:
            memoisable = action.name in self._static_actions
            if memoisable:
                command = self._command_memo.get(operators[action.id].name)
                if command is not None:
                    commands.append(command)
                    continue
            if facts is None:
                facts = list(self._state.facts)
            context = {"state": self._state, "facts": facts,
                       "variables": {ph.name: self._entity_infos[var.name] for ph, var in action.mapping.items()},
                       "mapping": action.mapping, "entity_infos": self._entity_infos}
            action.command_template = derive_text(self._logic.grammar, action.command_template, context)
            command = normalize_command(action.format_command(self._mapping))
            if memoisable:
                self._command_memo[operators[action.id].name] = command
            commands.append(command)
        self._actions, self._commands = actions, commands

    def admissible_commands(self) -> tuple[str, ...]:
        """Return TextWorld's admissible commands in this state (sorted, unique, with "help")."""
        if self._commands is None:
            self._gather_commands()
        return tuple(sorted(set(self._commands)))

    def won(self) -> bool:
        """Return whether the goal holds."""
        return bool(self._state.check_goal())

    def plan_length(self) -> int:
        """Return the planner's remaining plan length (0 when won, :data:`NO_PLAN` when none)."""
        if self.won():
            return 0
        if not self._lib.replan(False):
            return NO_PLAN
        return int(self._lib.get_last_plan_length())

    def _state_digests(self) -> tuple[bytes, bytes]:
        digests = self._digests
        if digests is None:
            digests = state_digests(self._state.facts)
            if self._fast:
                self._digests = digests
        return digests

    def state_info(self) -> StateInfo:
        """Return the :class:`StateInfo` of the current state (computes commands and a plan)."""
        state_key, world_key = self._state_digests()
        return StateInfo(state_key, world_key, self.admissible_commands(), self.won(), self.plan_length())

    def state_key(self) -> bytes:
        """Return the digest of the current fact set."""
        return self._state_digests()[0]

    # -- transitions
    def step(self, command: str) -> tuple[str, str]:
        """Apply an admissible ``command``; returns ``(feedback, planner operator name)``.

        ``command`` is normalised first (``"go to  desk "`` plays ``"go to desk"``). Raises
        ``ValueError`` when it is not admissible here (the env never sends one).
        """
        if self._commands is None:
            self._gather_commands()
        idx = self._commands.index(normalize_command(command))
        action = self._actions[idx]
        operator = self._state._operators[action.id].name
        self._state.apply(action)
        self._digests = None
        variables = {ph.name: self._entity_infos[var.name] for ph, var in action.mapping.items()}
        feedback = derive_text(self._logic.grammar, action.feedback_rule, self._context(variables, action.mapping))
        self._actions = self._commands = None
        self.history.append(operator)
        return feedback, operator

    def replay(self, operators: Sequence[str]) -> None:
        """Reset and apply planner ``operators`` in order without deriving any text.

        When the engine's :attr:`history` is already a prefix of ``operators`` (the env followed
        cached transitions from where the engine stood), only the missing operators are applied:
        the state is the same, since a PDDL state is a function of the operators applied.
        """
        done = len(self.history)
        if (self._fast and self._state is not None and done <= len(operators)
                and list(operators[:done]) == self.history):
            if done == len(operators):
                return
            operators = operators[done:]
        else:
            self._new_state()
        self._digests = None
        for name in operators:
            actions = self._state.all_applicable_actions()
            for action in actions:
                if self._state._operators[action.id].name == name:
                    self._state.apply(action)
                    break
            else:
                raise RuntimeError(f"replay diverged: operator {name!r} is not applicable in game "
                                   f"{self.game.path if self.game else '?'}; clear the ALFWorld transition cache")
            self.history.append(name)
        self._actions = self._commands = None


class ReferenceEngine:
    """Upstream's engine: TextWorld ``PddlEnv`` + alfworld ``AlfredDemangler``, planner on every state.

    Same query methods as :class:`FastEngine` (no replay). Used for ``cache=False`` and in tests.
    Demangled names are stripped and commands normalised (:func:`make_reference_env`), which
    changes nothing on numbered games and makes unnumbered ones ("desk", "cd") playable.

    Example:
        The two engines agree on a small cached game (texts, commands, goal, plan length, state digests):

        >>> from derl_gym.envs.alfworld.engine import FastEngine, ReferenceEngine, _example_game
        >>> game = _example_game()
        >>> reference, fast = ReferenceEngine(), FastEngine()
        >>> reference.load(game); fast.load(game)
        >>> reference.reset() == fast.reset(), reference.state_info() == fast.state_info()
        (True, True)
        >>> reference.step("go to sidetable 1")     # no planner operator: it cannot replay
        ('You arrive at sidetable 1. On the sidetable 1, you see a book 1.', '')
        >>> _ = fast.step("go to sidetable 1")
        >>> reference.state_info() == fast.state_info(), reference.plan_length()
        (True, 4)
        >>> reference.close(); fast.close()
    """

    def __init__(self) -> None:
        textworld = import_textworld()
        infos = textworld.EnvInfos(won=True, admissible_commands=True, policy_commands=True, facts=True)
        self._env = make_reference_env(infos)
        self._pddl = self._env.unwrapped
        self.game: GameFile | None = None
        self._gs = None

    def load(self, game: GameFile) -> None:
        """Load ``game`` through ``PddlEnv.load`` (data dict) and the demangler."""
        self.game = game
        argv = list(sys.argv)
        try:
            self._env.load(game.data)
        finally:
            sys.argv[:] = argv

    def reset(self) -> str:
        """Reset; returns the intro text."""
        argv = list(sys.argv)
        try:
            self._gs = self._env.reset()
        finally:
            sys.argv[:] = argv
        return self._gs.feedback

    def step(self, command: str) -> tuple[str, str]:
        """Send the normalised ``command`` to ``PddlEnv.step``; returns ``(feedback, "")``."""
        self._gs, _, _ = self._env.step(normalize_command(command))
        return self._gs.feedback, ""

    def admissible_commands(self) -> tuple[str, ...]:
        """Return the state's ``admissible_commands``, normalised (sorted, unique)."""
        return tuple(sorted({normalize_command(c) for c in self._gs["admissible_commands"]}))

    def won(self) -> bool:
        """Return the state's ``won``."""
        return bool(self._gs["won"])

    def plan_length(self) -> int:
        """Return ``len(policy_commands)`` (0 when won, :data:`NO_PLAN` when the planner found none)."""
        if self.won():
            return 0
        plan = self._gs["policy_commands"]
        return len(plan) if plan else NO_PLAN

    def state_info(self) -> StateInfo:
        """Return the :class:`StateInfo` of the current state."""
        state_key, world_key = state_digests(self._gs["_facts"])
        return StateInfo(state_key, world_key, self.admissible_commands(), self.won(), self.plan_length())

    def close(self) -> None:
        """Close the TextWorld env; its fast-downward library copy goes to the process pool."""
        lib = getattr(self._pddl, "downward_lib", None)
        try:
            self._env.close()
        except Exception:  # pragma: no cover - best effort on shutdown
            logger.debug("closing the reference engine failed", exc_info=True)
        if lib is not None:
            _release_lib(lib)
            self._pddl.downward_lib = None
        self.game = None
