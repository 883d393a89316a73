"""Detection and the alarm lifecycle."""
