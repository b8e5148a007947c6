"""Drivers: one typed config and one ``run_x(cfg)`` per job (distill, finetune, prune, export,
evaluate, demo, ...).  The CLI only parses arguments into the config and calls the driver; benches
and the demo call the drivers directly with configs built by ``dataclasses.replace``."""
