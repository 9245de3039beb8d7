"""rdevos.eval."""
