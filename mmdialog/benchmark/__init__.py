"""The speed benchmark: our pipeline against a naive cascade with the same weights (`mmdialog bench`)."""
