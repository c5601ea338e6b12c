"""Training data: the JSONL dialogue format, its validation, converters and the dataset."""
