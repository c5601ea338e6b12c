"""YAML presets, shipped inside the package so they are found after a plain `pip install .`."""
