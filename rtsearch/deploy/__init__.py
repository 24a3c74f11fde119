"""What ships: a run's deployed model (the skip path with its runtime policy, `deployed`), its fixed-shape form for
the MLflow Model Registry (`traced`), and the deployed model put on another MACs budget (`at_budget`); imports
rtsearch.rl (the policies' observations) and rtsearch.net, never the methods or the search."""
