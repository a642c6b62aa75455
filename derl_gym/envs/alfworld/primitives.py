"""ALFWorld reward primitives (the DERL paper's agent primitives g1..g4 on ALFWorld's ``info``).

``alfworld_primitives(step_scorer)`` returns the ordered set

- ``g1`` ``success``: 1 if the episode ended with ``info["won"]`` (task reward 1), else 0;
- ``g2`` / ``g3`` / ``g4`` ``<scorer>_first`` / ``_middle`` / ``_last``: the mean step score over the
  first, middle and last third of the trajectory (see
  :func:`derl_gym.rewards.primitives.segment_bounds`).

Step scorers (what a step scores, read from the ``info`` that :class:`ALFWorldEnv` publishes):

- ``progress`` (default): 1 when fast-downward's remaining plan got shorter with this action
  (``info["progress"]``), else 0;
- ``valid``: 1 when the action was admissible (``info["valid_action"]``) and changed the world
  (``info["state_changed"]``; look/examine/inventory do not), else 0;
- ``tags``: RLVMR-style, for a language-model agent whose action text carries ``<planning>``,
  ``<explore>``, ``<reflection>`` and one ``<action>``: 1 when the reasoning tag fits what the action
  did, 0.5 when the action is well-formed but the tag does not fit, 0 when there is no single
  ``<action>`` tag or the action was inadmissible. (The env checks admissibility of the whole
  text, so a tags agent's wrapper must extract the ``<action>`` before stepping and report it.)
"""

from __future__ import annotations

from derl_gym.rewards.primitives import (
    STEP_SCORER_DESCRIPTIONS,
    PrimitiveSet,
    StepScorer,
    agent_primitives,
)

#: step scorers offered for ALFWorld and what they score.
ALFWORLD_STEP_SCORERS: dict[str, str] = {
    "progress": "1 when the planner's remaining plan got shorter with this action (info['progress'])",
    "valid": "1 when the action was admissible and changed the world (info['valid_action'] and "
             "info['state_changed']; look/examine/inventory do not change it)",
    "tags": STEP_SCORER_DESCRIPTIONS["tags"],
}


def alfworld_primitives(step_scorer: str | StepScorer = "progress") -> PrimitiveSet:
    """Return ALFWorld's agent primitive set ``[success, <scorer>_first, _middle, _last]`` (``g1..g4``).

    Args:
        step_scorer: what one step scores: ``"progress"`` (default), ``"valid"``, ``"tags"`` (see the
            module doc) or a callable ``Step -> float``. ``describe()`` on the result names each
            primitive and its step score.

    Returns:
        A :class:`~derl_gym.rewards.primitives.PrimitiveSet` named ``alfworld:<scorer>``.

    Raises:
        ValueError: for an unknown scorer name.

    Example:
        >>> from derl_gym.envs.alfworld.primitives import alfworld_primitives
        >>> from derl_gym.rewards import Step, Trajectory
        >>> primitives = alfworld_primitives()
        >>> primitives
        PrimitiveSet('alfworld:progress', ['success', 'progress_first', 'progress_middle', 'progress_last'])
        >>> episode = Trajectory("You are in the middle of a room.", {})
        >>> for progress, won in [(1.0, False), (0.0, False), (1.0, True)]:   # won on the third step
        ...     episode.append(Step("go to desk 1", "...", float(won), won, False, {"progress": progress, "won": won}))
        >>> primitives.compute(episode).tolist()
        [1.0, 1.0, 0.0, 1.0]
        >>> alfworld_primitives("tidy")
        Traceback (most recent call last):
            ...
        ValueError: unknown ALFWorld step scorer 'tidy'; choose one of ['progress', 'tags', 'valid'] or pass a callable Step -> float
    """
    if isinstance(step_scorer, str) and step_scorer not in ALFWORLD_STEP_SCORERS:
        raise ValueError(f"unknown ALFWorld step scorer {step_scorer!r}; choose one of "
                         f"{sorted(ALFWORLD_STEP_SCORERS)} or pass a callable Step -> float")
    base = agent_primitives(step_scorer, name="alfworld")
    if not isinstance(step_scorer, str):
        return base
    # Same functions as agent_primitives, with ALFWorld-specific descriptions.
    from derl_gym.rewards.primitives import Primitive

    what = ALFWORLD_STEP_SCORERS[step_scorer]
    prims = [base[0]]
    for prim in list(base)[1:]:
        segment = prim.name.rsplit("_", 1)[1]
        prims.append(Primitive(name=prim.name, kind=prim.kind, bounds=prim.bounds, function=prim.function,
                               description=f"mean step score over the {segment} third of the trajectory; "
                                           f"step score: {what}"))
    return PrimitiveSet(prims, name=base.name)
