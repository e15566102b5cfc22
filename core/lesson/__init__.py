"""Guided lessons: their steps as data (one YAML file per lesson) and the checkpoints that read a
step's result and say whether it worked."""
