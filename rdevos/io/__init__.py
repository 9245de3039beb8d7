"""rdevos.io."""
