"""Prediction from the architecture's own code on the meta device: KV geometry, activations, the planner."""
