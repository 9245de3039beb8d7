"""rdevos.hub."""
