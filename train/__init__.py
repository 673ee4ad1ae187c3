"""leukedge train."""
