"""The reconcile engine used by `sync` and `run`, and the daemon around it."""
