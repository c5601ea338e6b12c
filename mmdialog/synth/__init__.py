"""The project's synthetic multimodal dialogue world: coloured shapes, questions about them (typed or spoken),
and a few kiosk facts; train / valid / test splits with held-out pairs, phrasings and a held-out voice."""

from mmdialog.synth.stats import family_chance
from mmdialog.synth.world import generate_world

__all__ = ["family_chance", "generate_world"]
