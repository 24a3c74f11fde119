"""rtsearch: runtime and static channel pruning of CNNs with deep reinforcement learning, searched with Ray Tune.

Layers, imports flowing one way (tests/test_layout.py checks it):
entry points (train, tune, export, bench with its bench_* modules, report; cli)
-> search -> methods (the registry every entry point asks) -> rl -> net
-> bottom (data, config, device, errors, logs, storage).
The studies that write results/ live outside the package, in experiments/ (`python -m experiments.<module>`).
"""
