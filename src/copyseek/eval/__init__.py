"""DISC21 evaluation: micro-average precision, recall at precision 0.9, accuracy@1, PR curves."""
