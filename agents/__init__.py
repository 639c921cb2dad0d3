"""cloudgym.agents: what is trained (SB3 glue, predictors, imitation and prototype agents) and checkpoints.

Submodules import their heavy dependencies (torch, stable-baselines3) themselves;
importing this package imports neither.
"""
