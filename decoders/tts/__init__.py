"""Text to speech: Piper voices (onnxruntime + espeak-ng), Coqui TTS models, or none."""
