"""Action executors: one per action, each plan -> apply -> verify and idempotent."""
