"""Turn raw input (speech, images) into tensors; knows nothing about fusion or dialogue."""
