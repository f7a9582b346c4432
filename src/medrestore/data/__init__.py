"""Data: where source images come from, how they are prepared, and how they become patches."""
