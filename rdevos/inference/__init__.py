"""rdevos.inference."""
