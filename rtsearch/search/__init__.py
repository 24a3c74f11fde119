"""The search: the sweep driver, the Tune trial (what runs on a worker), search spaces, MLflow tracking, sweep
reports; imports rtsearch.rl, rtsearch.net and the bottom modules."""
