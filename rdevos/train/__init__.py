"""rdevos.train."""
