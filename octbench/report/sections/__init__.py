"""One module per report section (new sections land here)."""
