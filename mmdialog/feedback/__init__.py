"""Learning from the people who use it: rated and corrected replies become training data (export.py)."""
