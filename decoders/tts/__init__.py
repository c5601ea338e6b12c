"""Text to speech: Piper voices run with onnxruntime."""
