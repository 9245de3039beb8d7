"""rdevos.model."""
