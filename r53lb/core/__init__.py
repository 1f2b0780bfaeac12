"""The pure core: health, weights, planner, records, alert watcher. No I/O; `now` is passed in."""
