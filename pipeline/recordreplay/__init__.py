"""Record live traffic to MCAP, replay it through a fresh pipeline, compare the outcomes."""
