"""Reinforcement learning only: the two agents' environments, RLlib configurations, greedy policies and training
iteration, the ladder's re-run agent, a run's record and its deployed model; imports rtsearch.net and the bottom
modules, never the methods or the search."""
