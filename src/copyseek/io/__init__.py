"""Reading images (decode once, normalise, skip bad files with a reason) and the DISC21 CSV files."""
