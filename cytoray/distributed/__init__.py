"""Ray Train loops, stage running with a content-keyed cache, and (later) Tune trial drivers."""
