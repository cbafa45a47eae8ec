"""Watching production models: realized outcomes of scores, live calibration, drift against the
training rows, the scheduled monitor that runs them (and reports and auto-retrain)."""
