"""The YAML run config of ``orpo train``: sections for model, adapter, quantisation, data, training.

``load_recipe`` reads a file (or the embedded default), applies ``key=value`` overrides
(``training.beta=0.2``, or just ``beta=0.2`` for a training field) and validates every section with
messages that name the offending value and where it was set; ``recipe_from`` builds the same from
Python values. One module per job:

schema     the sections (dataclasses, each field documented once) and ``Recipe``
convert    YAML values and overrides -> the fields' declared types
origins    which file line or override set a value, for error messages
defaults   the training defaults of a YAML run (``RECIPE_DEFAULTS``) and ``--help-config``
load       ``load_recipe`` and ``recipe_from``
"""

from orpo.run.recipe.convert import WIDER_TYPES, convert_field, parse_override
from orpo.run.recipe.defaults import (
    LOGGING_RATIO,
    RECIPE_DEFAULTS,
    RecipeDefault,
    describe_fields,
    recipe_defaults,
)
from orpo.run.recipe.load import DEFAULT_RECIPE, load_recipe, recipe_from
from orpo.run.recipe.schema import (
    DTYPES,
    SECTIONS,
    TINY_PREFIX,
    TRAINING_FIELDS,
    AdapterSection,
    DataSection,
    ModelSection,
    QuantSection,
    Recipe,
)

__all__ = [
    "DEFAULT_RECIPE",
    "DTYPES",
    "LOGGING_RATIO",
    "RECIPE_DEFAULTS",
    "SECTIONS",
    "TINY_PREFIX",
    "TRAINING_FIELDS",
    "WIDER_TYPES",
    "AdapterSection",
    "DataSection",
    "ModelSection",
    "QuantSection",
    "Recipe",
    "RecipeDefault",
    "convert_field",
    "describe_fields",
    "load_recipe",
    "parse_override",
    "recipe_defaults",
    "recipe_from",
]
