"""Root pytest configuration: what ``--doctest-modules`` (setup.cfg ``[tool:pytest]``) must not import.

``make test`` collects the doctests of every module of the ``derl_gym`` package, which imports each
module. Every module imports its optional dependencies lazily except one:

- ``derl_gym/integrations/verifiers.py`` imports the ``verifiers`` package (the ``verifiers`` extra)
  at module level, as its whole job is to build verifiers objects; without that extra its doctests
  are not collected (its tests in ``tests/integrations/test_verifiers.py`` skip on their own).
"""

from __future__ import annotations

import importlib.util

collect_ignore: list[str] = []
if importlib.util.find_spec("verifiers") is None:
    collect_ignore.append("derl_gym/integrations/verifiers.py")
