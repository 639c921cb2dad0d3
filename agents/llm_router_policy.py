"""A heuristic-guided, permutation-equivariant actor-critic for LLMRouter-v0 (sb3-contrib MaskablePPO).

Jain et al. guide their RL router with their workload-aware heuristic. Here
the guidance is built into the policy: the logit of instance n is

    logit_n = -scale x impact_n + g(instance_n, mean over instances, request)

where ``impact_n`` is the heuristic's estimated added latency (observation
column 6 of instance n), ``scale`` a learnt temperature and ``g`` a small MLP
shared by all instances whose last layer starts at zero. The untrained policy
therefore *is* the heuristic (deterministically: argmin of the estimate), and
PPO learns a residual correction from the per-instance state and the request
(its prompt, predicted output bucket and class). Sharing ``g`` across
instances makes the policy equivariant to the instances' order, as a router
should be; the critic pools per-instance embeddings (mean and max).

Use it through the YAML (``policy: cloudgym.agents.llm_router_policy:InstanceScoringPolicy``);
``scripts/train.py`` resolves the class.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from torch import nn

INSTANCE_FEATURES = 7
"""Per-instance observation columns (see LLMRouter-v0's docstring); column 6 is the heuristic's estimate."""
IMPACT_COLUMN = 6


class InstanceScorer(nn.Module):
    """Actor: per-instance logits (heuristic prior + shared residual MLP); critic: pooled instance embeddings."""

    def __init__(self, feature_dim: int, num_instances: int, hidden: int = 64, heuristic_scale: float = 50.0) -> None:
        super().__init__()
        self.num_instances = num_instances
        self.request_dim = feature_dim - INSTANCE_FEATURES * num_instances
        if self.request_dim < 0:
            raise ValueError(f"observation of {feature_dim} values is too small for {num_instances} instances")
        in_dim = 2 * INSTANCE_FEATURES + self.request_dim
        self.residual = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.log_scale = nn.Parameter(torch.tensor(math.log(heuristic_scale)))
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.critic = nn.Sequential(nn.Linear(2 * hidden + self.request_dim, hidden), nn.ReLU())
        self.latent_dim_pi = num_instances
        self.latent_dim_vf = hidden
        self.reset_residual()

    def reset_residual(self) -> None:
        """Zero the residual's output layer: the policy starts as the heuristic."""
        last = self.residual[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _per_instance(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n = features.shape[0], self.num_instances
        inst = features[:, : INSTANCE_FEATURES * n].reshape(b, n, INSTANCE_FEATURES)
        request = features[:, INSTANCE_FEATURES * n :]
        context = inst.mean(dim=1, keepdim=True).expand(b, n, INSTANCE_FEATURES)
        x = torch.cat([inst, context, request.unsqueeze(1).expand(b, n, self.request_dim)], dim=2)
        return inst, request, x

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        inst, _, x = self._per_instance(features)
        return -self.log_scale.exp() * inst[:, :, IMPACT_COLUMN] + self.residual(x).squeeze(-1)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        _, request, x = self._per_instance(features)
        e = self.embed(x)
        pooled = torch.cat([e.mean(dim=1), e.amax(dim=1), request], dim=1)
        return self.critic(pooled)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)


class InstanceScoringPolicy(MaskableActorCriticPolicy):
    """MaskableActorCriticPolicy whose logits are the :class:`InstanceScorer`'s per-instance scores."""

    def __init__(self, *args: Any, hidden: int = 64, heuristic_scale: float = 50.0, **kwargs: Any) -> None:
        self._hidden = hidden
        self._heuristic_scale = heuristic_scale
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        n = int(self.action_space.n)  # type: ignore[attr-defined]
        self.mlp_extractor = InstanceScorer(  # type: ignore[assignment]
            self.features_dim, n, hidden=self._hidden, heuristic_scale=self._heuristic_scale
        )

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # The scorer already produces the logits: no extra linear layer on top (it would mix instances).
        self.action_net = nn.Identity()
        scorer = self.mlp_extractor
        assert isinstance(scorer, InstanceScorer)
        scorer.reset_residual()  # SB3's orthogonal init touched it
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
