"""rdevos.export."""
