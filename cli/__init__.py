"""leukedge cli."""
