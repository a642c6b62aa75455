"""The switch for the inner loop's fast paths, and a list type whose deep copy is cheap.

``DERL_GYM_INNER_FAST=0`` turns off the caches and shortcuts added to make inner runs faster
(candidate-block cache of :class:`~derl_gym.wrappers.text_actions.TextActionWrapper`, prefix
replay and single state digests of the ALFWorld engine, distribution argument checks off during
SB3 training, batched evaluation), so ``benchmarks/bench_inner_speed.py`` can time the old path
against the new one in one script. Each component reads the switch when it is constructed.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["FAST_PATH_ENV", "fast_path_enabled", "StrList"]

#: environment variable that disables the fast paths when set to 0 / false / no / off
FAST_PATH_ENV = "DERL_GYM_INNER_FAST"


def fast_path_enabled() -> bool:
    """Return False when ``$DERL_GYM_INNER_FAST`` is ``0``, ``false``, ``no`` or ``off``; True otherwise.

    Example:
        >>> import os
        >>> from derl_gym.utils.fastpath import FAST_PATH_ENV, fast_path_enabled
        >>> previous = os.environ.get(FAST_PATH_ENV)
        >>> os.environ[FAST_PATH_ENV] = "off"
        >>> off = fast_path_enabled()
        >>> os.environ[FAST_PATH_ENV] = "1"
        >>> off, fast_path_enabled()
        (False, True)
        >>> _ = os.environ.pop(FAST_PATH_ENV) if previous is None else os.environ.update({FAST_PATH_ENV: previous})
    """
    return os.environ.get(FAST_PATH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class StrList(list):
    """A ``list`` of ``str`` whose ``copy.deepcopy`` is a shallow copy (strings are immutable).

    Infos that carry command lists (``admissible_commands``, ``candidates``) use it: SB3's
    ``DummyVecEnv`` deep-copies every info on every step, and a plain list of N strings costs N
    Python-level ``deepcopy`` calls. The copy is equal, independent and again a :class:`StrList`.

    Example:
        >>> import copy
        >>> from derl_gym.utils.fastpath import StrList
        >>> commands = StrList(["look", "go to desk 1"])
        >>> copied = copy.deepcopy(commands)
        >>> copied == commands, copied is commands, type(copied).__name__, copied[0] is commands[0]
        (True, False, 'StrList', True)
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> "StrList":
        return StrList(self)

    def __copy__(self) -> "StrList":
        return StrList(self)
