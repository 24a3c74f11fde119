"""rtsearch: runtime and static channel pruning of CNNs with deep reinforcement learning, searched with Ray Tune.

Layers, imports flowing one way (tests/test_layout.py checks it):
entry points (train, tune, export, bench, report, study, search_study; cli) and studies
-> search -> rl -> net -> bottom (data, config, device, errors, logs, storage).
"""
