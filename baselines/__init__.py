"""cloudgym.baselines: batched heuristic and oracle policies, one module per env.

Importing this package registers every baseline with :mod:`cloudgym.policy`
and every env's comparison report with :mod:`cloudgym.reports`.
"""

from cloudgym.baselines import dc_lifecycle, faas_keepalive, gpu_powercap, llm_router, oversubscription, toy_cluster

__all__ = ["dc_lifecycle", "faas_keepalive", "gpu_powercap", "llm_router", "oversubscription", "toy_cluster"]
