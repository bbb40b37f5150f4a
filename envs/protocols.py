"""Named Meta-World training/evaluation protocols.

A protocol fixes everything about the environment and the evaluation that changes the number a paper
reports: episode length, whether goals are resampled, the reward version, how many evaluation
episodes are run and which statistic of the evaluation history is reported. Every run stamps its
protocol into its config so results are only ever compared within one protocol
(the two families of published MT10/MT50 numbers are not comparable with each other).

* ``metaworld-v3`` — the Meta-World+ protocol (McLean et al., NeurIPS 2025 D&B, arXiv 2505.11289):
  a goal resampled from 50 per task at every reset, 500-step episodes, v2 reward, evaluation with
  ``metaworld.evaluation.evaluation`` (50 episodes per task by default), report the final evaluation
  and the mean of the last evaluations.
* ``mtrl-legacy`` — the facebookresearch/mtrl harness behind the CARE, CAGrad, Nash-MTL, FAMO and
  Aligned-MTL tables: one fixed goal per task for the whole run, 150-step episodes, one deterministic
  episode per task per evaluation, report the best evaluation. Those numbers were obtained on
  Meta-World **v1** environments (12-d observations, v1 geometry), which v3 cannot reproduce, so
  numbers under this protocol are only *approximately* comparable with the published v1-era ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["GOAL_MODES", "PROTOCOLS", "TOY_PROTOCOL", "Protocol", "get_protocol"]

#: How ``protocol_details`` names the goal mode (``Protocol.random_goals``) of a protocol.
GOAL_MODES: dict[bool, str] = {True: "resampled at every reset", False: "fixed per task for the whole run"}

#: ``protocol_details`` keys that hold the :class:`Protocol` field of the same name (``goals`` holds
#: ``random_goals`` as :data:`GOAL_MODES` text; ``reported_statistic`` is derived from ``report``).
_SAME_KEYS = (
    "name",
    "max_episode_steps",
    "reward_function_version",
    "reward_normalization",
    "eval_episodes_per_task",
    "deterministic_eval",
    "evaluator",
    "report",
    "report_last_n",
    "eval_every",
)

RewardVersion = Literal["v1", "v2"]
ReportRule = Literal["final_and_last_mean", "best"]
Evaluator = Literal["metaworld", "episodes"]


@dataclass(frozen=True)
class Protocol:
    """How environments are built and how a run is evaluated and reported.

    Attributes:
        name: registry key (``"metaworld-v3"``, ``"mtrl-legacy"``, ``"toy"``).
        max_episode_steps: episode length; the env truncates (not terminates) at this step.
        random_goals: True = a new goal (task variation) is sampled at every reset; False = each
            sub-env keeps the goal drawn at its first reset for the whole run ("MT10-Fixed").
        reward_function_version: Meta-World reward version passed to ``gymnasium.make_vec``
            (None for suites without reward versions, i.e. the toy suite).
        reward_normalization: Meta-World ``reward_normalization_method`` (None = raw rewards).
        eval_episodes_per_task: default number of evaluation episodes per task.
        deterministic_eval: evaluate with the policy's deterministic (mean) action.
        evaluator: ``"metaworld"`` = the official ``metaworld.evaluation.evaluation`` (temporarily
            terminates on success, so success means "any success in the episode"); ``"episodes"`` =
            mtrl's loop of full-length episodes, success = any step with ``info["success"]``.
        report: ``"final_and_last_mean"`` = report the last evaluation and the mean over the last
            ``report_last_n`` evaluations; ``"best"`` = report the maximum over all evaluations.
        report_last_n: number of final evaluations averaged by ``"final_and_last_mean"``.
        eval_every: default evaluation cadence in vector-env steps (= environment steps per task).
            Part of the protocol because a best-over-evaluations statistic grows with the number of
            evaluations (CARE Table 19: evaluating every 1k instead of 10k steps adds up to 5 points).
    """

    name: str
    max_episode_steps: int
    random_goals: bool
    reward_function_version: RewardVersion | None
    reward_normalization: Literal["exponential"] | None
    eval_episodes_per_task: int
    deterministic_eval: bool
    evaluator: Evaluator
    report: ReportRule
    report_last_n: int = 1
    eval_every: int = 10_000

    def __post_init__(self) -> None:
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if self.eval_episodes_per_task < 1:
            raise ValueError(f"eval_episodes_per_task must be >= 1, got {self.eval_episodes_per_task}")
        if self.report_last_n < 1:
            raise ValueError(f"report_last_n must be >= 1, got {self.report_last_n}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.report not in ("final_and_last_mean", "best"):
            raise ValueError(f"report must be 'final_and_last_mean' or 'best', got {self.report!r}")
        if self.evaluator not in ("metaworld", "episodes"):
            raise ValueError(f"evaluator must be 'metaworld' or 'episodes', got {self.evaluator!r}")

    @property
    def reported_statistic(self) -> str:
        """The headline key of :meth:`summarize`: ``"best"`` (mtrl-legacy: max over evaluations) or
        ``"final"`` (metaworld-v3, toy: the last evaluation; Meta-World+ reports final performance)."""
        return "best" if self.report == "best" else "final"

    def details(self, eval_episodes: int | None = None, eval_every: int | None = None) -> dict[str, Any]:
        """The ``protocol_details`` a run under this protocol stamps into its config and hparams.

        ``eval_episodes`` / ``eval_every`` are the run's own values (None: the protocol's defaults).
        :meth:`from_details` turns the result back into the run's :class:`Protocol`."""
        return {
            "name": self.name,
            "max_episode_steps": self.max_episode_steps,
            "goals": GOAL_MODES[self.random_goals],
            "reward_function_version": self.reward_function_version,
            "reward_normalization": self.reward_normalization,
            "eval_episodes_per_task": eval_episodes or self.eval_episodes_per_task,
            "deterministic_eval": self.deterministic_eval,
            "evaluator": self.evaluator,
            "report": self.report,
            "report_last_n": self.report_last_n,
            "reported_statistic": self.reported_statistic,
            "eval_every": self.eval_every if eval_every is None else eval_every,
        }

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> Protocol:
        """The run's protocol from its ``protocol_details`` (:meth:`details`; no registry lookup): the
        named protocol with the run's evaluation episodes and cadence as its defaults.

        Raises ValueError naming the missing keys or the unknown goal mode."""
        missing = [key for key in (*_SAME_KEYS, "goals") if key not in details]
        if missing:
            raise ValueError(f"protocol_details lack {missing}: resolve the config first (mtrl.config.load_config)")
        modes = {text: random for random, text in GOAL_MODES.items()}
        if details["goals"] not in modes:
            raise ValueError(f"bad protocol_details goals {details['goals']!r}; valid: {', '.join(map(repr, modes))}")
        return cls(random_goals=modes[details["goals"]], **{key: details[key] for key in _SAME_KEYS})

    def summarize(self, success_history: list[float]) -> dict[str, float]:
        """Reported numbers from the mean success of every evaluation of a run, in order.

        Returns ``{"final": last, "last_mean": mean of the last report_last_n}`` for
        ``"final_and_last_mean"`` and ``{"best": max, "final": last}`` for ``"best"``.
        """
        if not success_history:
            raise ValueError("success_history is empty: run at least one evaluation before reporting")
        if self.report == "best":
            return {"best": float(max(success_history)), "final": float(success_history[-1])}
        window = success_history[-self.report_last_n :]
        return {"final": float(success_history[-1]), "last_mean": float(sum(window) / len(window))}


#: Meta-World+ (McLean et al. 2025): random goals, 500 steps (``max_path_length``), v2 reward (the
#: v3 default), ``metaworld.evaluation.evaluation`` with 50 episodes per task. The paper reports IQM
#: over 10 seeds of the final performance; ``report_last_n = 10`` (the last 10 evaluations) is our
#: own smoothing choice for single-run curves, not theirs. Cadence: rainx0r/metaworld-algorithms'
#: MT10 script evaluates every 200_000 // 500 = 400 finished episodes, i.e. every 20k vector steps
#: (Meta-World+'s training script). The same 20k is this protocol's default for every task set, although on
#: MT50 the reference's episode count gives every 4k (8 episodes per task): ``configs/mt50_mwplus.yaml`` sets
#: ``eval_every: 4000`` (docs/mwplus.md).
#: One evaluation costs up to 50 × 500 = 25k vector steps (less where episodes end on success).
METAWORLD_V3 = Protocol(
    name="metaworld-v3",
    max_episode_steps=500,
    random_goals=True,
    reward_function_version="v2",
    reward_normalization=None,
    eval_episodes_per_task=50,
    deterministic_eval=True,
    evaluator="metaworld",
    report="final_and_last_mean",
    report_last_n=10,
    eval_every=20_000,
)

#: facebookresearch/mtrl (its ``experiment/metaworld.py`` and configs): fixed goals, 150 steps ("MetaWorld uses 150"
#: in ``experiment/metaworld.py``), 1 deterministic episode per task, best evaluation reported
#: (CAGrad App. B.3, Nash-MTL App. B). Reward: ``"v1"``, because the published numbers were trained
#: on v1 reward functions and Meta-World+ shows the reward version alone moves MT10 scores by up to
#: ~47 points; ``"exponential"`` normalization (running variance, α = 0.001) because mtrl always wraps
#: the envs in garage's ``NormalizedEnvWrapper(normalize_reward=True)``, of which Meta-World's
#: ``NormalizeRewardsExponential`` is the port. Note: v3 geometry and observations (39-d) differ from
#: v1 (12-d), and Meta-World's wrapper updates its statistics twice per step (effective α ≈ 0.002),
#: so numbers are only approximately comparable with v1-era tables.
MTRL_LEGACY = Protocol(
    name="mtrl-legacy",
    max_episode_steps=150,
    random_goals=False,
    reward_function_version="v1",
    reward_normalization="exponential",
    eval_episodes_per_task=1,
    deterministic_eval=True,
    evaluator="episodes",
    report="best",
    eval_every=10_000,
)

#: The pure-numpy toy suite (:mod:`envs.toy`): episodes of the length given to ``make_toy_envs``
#: (40 by default), fixed goals, 10 deterministic evaluation episodes per task (cheap; averages over
#: the random start positions) every 500 steps, final and last-5 mean reported.
TOY_PROTOCOL = Protocol(
    name="toy",
    max_episode_steps=40,
    random_goals=False,
    reward_function_version=None,
    reward_normalization=None,
    eval_episodes_per_task=10,
    deterministic_eval=True,
    evaluator="episodes",
    report="final_and_last_mean",
    report_last_n=5,
    eval_every=500,
)

#: The Meta-World protocols, by name.
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (METAWORLD_V3, MTRL_LEGACY)}


def get_protocol(protocol: str | Protocol) -> Protocol:
    """Look a protocol up by name (a :class:`Protocol` is returned unchanged).

    The one name → :class:`Protocol` lookup. A run calls it once, when its config is resolved
    (:meth:`agents.config.TrainConfig.resolve`, :func:`agents.stl_config.resolve_stl_config`); from then
    on the resolved config carries the protocol (``protocol_details``, :meth:`Protocol.from_details`)
    and env builders and evaluation receive the object. Entry points that take a name from a user
    (:func:`envs.metaworld.make_mt_envs`) look it up here at their edge."""
    if isinstance(protocol, Protocol):
        return protocol
    if not isinstance(protocol, str):
        raise TypeError(f"protocol must be a str or Protocol, got {type(protocol).__name__}")
    if protocol == TOY_PROTOCOL.name:
        return TOY_PROTOCOL
    if protocol not in PROTOCOLS:
        valid = ", ".join([*PROTOCOLS, TOY_PROTOCOL.name])
        raise ValueError(f"unknown protocol {protocol!r}; valid choices: {valid}")
    return PROTOCOLS[protocol]
