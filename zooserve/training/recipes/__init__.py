"""The lesson's models, one recipe module each, and the one list of their names.

`MODEL_NAMES` is what `zooserve train` offers and what docs/training.md lists. A recipe
module is imported only when its model is looked up, so listing names (and building the CLI)
imports nothing heavy. A new model is one recipe module and one line here.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zooserve.training.spec import ModelSpec

# Model name -> the recipe module (in this package) whose SPECS list holds its ModelSpec.
RECIPE_OF = {
    "penguins": "penguins",
    "weather": "weather",
    "digits": "digits",
    "digits_transfer": "digits_transfer",
    "spectra_similarity": "spectra",  # one siamese run ships both spectra models
    "spectra_embedding": "spectra",
}
MODEL_NAMES = list(RECIPE_OF)


def lookup(name: str) -> ModelSpec:
    """The named model's spec, from its recipe module."""
    if name not in RECIPE_OF:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    recipe = import_module(f"{__name__}.{RECIPE_OF[name]}")
    return next(spec for spec in recipe.SPECS if spec.name == name)
