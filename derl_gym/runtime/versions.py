"""Versions of the code and libraries that train and score an inner run (part of the cache key).

A result trained before an upgrade of torch, Stable-Baselines3, the text engines or derl-gym itself
may not be what the same formula gives now, so :meth:`InnerLoopSpec.spec_hash
<derl_gym.runtime.spec.InnerLoopSpec.spec_hash>` mixes in :func:`code_versions`: a version change
gives a new hash and no cache hits. ``reuse_across_versions=True`` (CLI ``--reuse-across-versions``)
looks results up by the version-free hash instead.

The run's versions are kept in the store's ``meta`` table (key ``versions``); :func:`record_versions`
compares them with the installed ones when a run is resumed and says which packages changed.
"""

from __future__ import annotations

import functools
import logging
import time
from importlib import metadata
from typing import Any, Mapping

logger = logging.getLogger(__name__)

#: Distributions whose versions enter every cache key: they train the inner agent or score it.
TRAINING_PACKAGES = ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy",
                     "textworld", "alfworld", "scienceworld")
#: Extra distributions of language-model trainers.
LM_PACKAGES = ("transformers", "trl", "peft", "accelerate")
#: ``AgentSpec.algorithm`` values trained by a language-model trainer (TRL).
LM_ALGORITHMS = ("grpo",)
#: The value recorded for a package that is not installed.
ABSENT = "absent"
#: Store ``meta`` key of the run's versions.
META_KEY = "versions"


@functools.lru_cache(maxsize=None)
def package_version(name: str) -> str:
    """Return the installed version of distribution ``name``, or ``"absent"`` when it is not installed.

    Example:
        >>> import numpy
        >>> from derl_gym.runtime.versions import package_version
        >>> package_version("numpy") == numpy.__version__, package_version("no-such-distribution")
        (True, 'absent')
    """
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ABSENT


def derl_gym_version() -> str:
    """Return the installed derl-gym version (the package's ``__version__`` when not installed).

    Example:
        >>> import derl_gym
        >>> from derl_gym.runtime.versions import derl_gym_version
        >>> derl_gym_version() == derl_gym.__version__
        True
    """
    version = package_version("derl-gym")
    if version == ABSENT:
        from derl_gym import __version__

        version = __version__
    return version


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """Return a short SHA-256 (12 hex digits) of derl_gym's own Python source.

    Every ``.py`` file of the package enters it, by relative path and content, so a change to a policy
    or wrapper changes the cache key even when the version number was not bumped.

    Example:
        >>> from derl_gym.runtime.versions import source_digest
        >>> digest = source_digest()
        >>> len(digest), int(digest, 16) >= 0
        (12, True)
    """
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def packages_for(algorithm: str | None) -> tuple[str, ...]:
    """Return the distributions whose versions key a run of ``algorithm``.

    The language-model stack (:data:`LM_PACKAGES`) is added for ``grpo``.

    Example:
        >>> from derl_gym.runtime.versions import packages_for
        >>> "torch" in packages_for("maskable_ppo"), "transformers" in packages_for("maskable_ppo")
        (True, False)
        >>> "transformers" in packages_for("grpo")
        True
    """
    if algorithm is not None and str(algorithm).lower() in LM_ALGORITHMS:
        return TRAINING_PACKAGES + LM_PACKAGES
    return TRAINING_PACKAGES


def code_versions(algorithm: str | None = None) -> dict[str, str]:
    """Return the versions that key an inner run of ``algorithm``.

    Returns:
        ``{"derl_gym": version, "derl_gym_source": digest, package: version or "absent", ...}``: the
        package version, :func:`source_digest` of its code, and each package of
        :func:`packages_for` ``(algorithm)``.

    Example:
        >>> from derl_gym.runtime.versions import code_versions, packages_for
        >>> versions = code_versions("ppo")
        >>> list(versions)[:2], set(packages_for("ppo")) <= set(versions)
        (['derl_gym', 'derl_gym_source'], True)
    """
    out = {"derl_gym": derl_gym_version(), "derl_gym_source": source_digest()}
    for name in packages_for(algorithm):
        out[name] = package_version(name)
    return out


def version_changes(old: Mapping[str, str] | None, new: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Return ``{package: (old, new)}`` for every package whose version differs.

    A package missing from one side counts as ``"absent"``; the result is empty when ``old`` is None
    (nothing recorded yet).

    Example:
        >>> from derl_gym.runtime.versions import version_changes
        >>> version_changes({"torch": "2.2.0", "numpy": "1.26.4"}, {"torch": "2.3.0", "numpy": "1.26.4", "trl": "0.12.0"})
        {'torch': ('2.2.0', '2.3.0'), 'trl': ('absent', '0.12.0')}
        >>> version_changes(None, {"torch": "2.3.0"})
        {}
    """
    if not old:
        return {}
    names = list(new) + [k for k in old if k not in new]
    return {k: (str(old.get(k, ABSENT)), str(new.get(k, ABSENT))) for k in names
            if str(old.get(k, ABSENT)) != str(new.get(k, ABSENT))}


def describe_changes(changes: Mapping[str, tuple[str, str]], *, reuse_across_versions: bool = False) -> str:
    """Return a one-paragraph message naming each changed package (``name old -> new``) and what happens to cached results.

    Example:
        >>> from derl_gym.runtime.versions import describe_changes
        >>> message = describe_changes({"torch": ("2.2.0", "2.3.0")})
        >>> "torch 2.2.0 -> 2.3.0" in message, "--reuse-across-versions" in message
        (True, True)
    """
    listed = ", ".join(f"{name} {a} -> {b}" for name, (a, b) in changes.items())
    if reuse_across_versions:
        return (f"code/library versions changed since this run last ran: {listed}; reusing results trained "
                "under the old versions (reuse_across_versions=True / --reuse-across-versions)")
    return (f"code/library versions changed since this run last ran: {listed}; results trained under the old "
            "versions are not reused (the cache key includes the versions), so their formulas are retrained. "
            "To reuse them anyway pass --reuse-across-versions (CLI) or reuse_across_versions=True")


def record_versions(store: Any, algorithm: str | None, *, reuse_across_versions: bool = False,
                    warn: bool = True) -> dict[str, tuple[str, str]]:
    """Compare the versions recorded in ``store`` with the installed ones and record the installed ones.

    A change is logged as a warning (unless ``warn=False``: the caller tells the user itself) and the
    previous set is appended to the ``versions_history`` meta key.

    Args:
        store: a :class:`~derl_gym.runtime.store.ResultStore` (anything with ``get_meta``/``set_meta``).
        algorithm: the inner algorithm (see :func:`packages_for`).
        reuse_across_versions: only changes the wording of the warning.
        warn: log the warning.

    Returns:
        The changes, ``{package: (old, new)}`` (``{}`` for a new run or unchanged versions).

    Example:
        >>> import tempfile
        >>> from derl_gym.runtime.store import ResultStore
        >>> from derl_gym.runtime.versions import record_versions
        >>> with tempfile.TemporaryDirectory() as run_dir, ResultStore(run_dir) as store:
        ...     first = record_versions(store, "ppo")
        ...     store.set_meta("versions", {**store.get_meta("versions"), "torch": "0.0.1"})  # pretend an old run
        ...     changes = record_versions(store, "ppo", warn=False)
        ...     first, list(changes), len(store.get_meta("versions_history"))
        ({}, ['torch'], 1)
    """
    current = code_versions(algorithm)
    previous = store.get_meta(META_KEY)
    changes = version_changes(previous, current)
    if changes and warn:
        logger.warning("%s: %s", getattr(store, "path", "store"),
                       describe_changes(changes, reuse_across_versions=reuse_across_versions))
    if changes:
        history = list(store.get_meta("versions_history", []) or [])
        history.append({"versions": previous, "replaced_at": time.time()})
        store.set_meta("versions_history", history)
    if previous != current:
        store.set_meta(META_KEY, current)
    return changes
