"""Import TextWorld without drawing from NumPy's global random generator.

``import textworld`` runs ``textworld/utils.py``, whose module-level ``g_rng = RandomGenerator()``
seeds TextWorld's own game-generation generator with ``np.random.randint(65635)``: one draw from
NumPy's *global* RNG, once per process, at whatever moment TextWorld is first imported. derl-gym
imports TextWorld lazily, on the first cache miss of the ALFWorld engine (a game whose transitions
are not on disk yet), which can fall in the middle of an SB3 rollout; SB3 shuffles its minibatches
with ``np.random``, so that one draw made the first job in a worker process train differently from an
identical later one. :func:`import_textworld` performs the import with the global RNG's state put
back afterwards, so TextWorld takes its seed from the global stream without consuming it (``g_rng``
is only used by TextWorld's own game generator, which derl-gym does not call). Every derl-gym path
that may be the first to import TextWorld (directly or through ``alfworld.agents``) calls it first.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

import numpy as np

__all__ = ["import_textworld"]

_IMPORT_LOCK = threading.Lock()


def import_textworld() -> ModuleType:
    """Import TextWorld (once per process) with NumPy's global RNG state unchanged.

    Thread-safe; a later call returns the module already imported.

    Returns:
        The ``textworld`` module.

    Raises:
        ImportError: when TextWorld is not installed (``pip install 'derl-gym[alfworld]'``).

    Example:
        >>> import numpy as np
        >>> from derl_gym.envs.alfworld.textworld_import import import_textworld
        >>> np.random.seed(0)
        >>> textworld = import_textworld()
        >>> textworld.__name__, float(np.random.rand()) == float(np.random.RandomState(0).rand())
        ('textworld', True)
    """
    module = sys.modules.get("textworld")
    if module is not None:
        return module
    with _IMPORT_LOCK:
        module = sys.modules.get("textworld")
        if module is not None:
            return module
        state = np.random.get_state()
        try:
            import textworld as module
        finally:
            np.random.set_state(state)
    return module
