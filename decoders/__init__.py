"""Decoders: from the fused dialogue state to text and speech."""
