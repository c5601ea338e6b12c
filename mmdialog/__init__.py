"""mmdialog: a multimodal dialogue system (speech, images, text in; text and voice out)."""

__version__ = "0.1.0"
