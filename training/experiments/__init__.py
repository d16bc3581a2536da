"""Experiment tooling built on the training core: ablations, reproduction, the demo."""
