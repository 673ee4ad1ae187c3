"""leukedge export."""
