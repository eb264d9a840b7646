"""The whole recipe: one attrs class per TOML table."""

from __future__ import annotations

import attrs

from olmo2spec.spec.cluster import ClusterSpec
from olmo2spec.spec.departures import DepartureSpec
from olmo2spec.spec.fields import doc, safe_name, seed_range
from olmo2spec.spec.mixes import MixSpec, SourceSpec
from olmo2spec.spec.model import ModelSpec, TokenizerSpec
from olmo2spec.spec.stages import Stage
from olmo2spec.spec.training import CheckpointSpec, DataSpec, OptimizerSpec, RuntimeSpec

__all__ = ["RecipeInfo", "Recipe"]


@attrs.frozen(kw_only=True)
class RecipeInfo:
    """`[recipe]`: what this recipe is."""

    name: str = doc("Recipe name; the bundle and job names derive from it.", validator=safe_name)
    description: str = doc("Free text for people; never used in scripts.", default="")
    seed: int = doc("Seed of initialisation, and of data order where a stage gives none.",
                    validator=seed_range)


@attrs.frozen(kw_only=True)
class Recipe:
    """A complete recipe. `extends` and `include` are resolved before this is built."""

    recipe: RecipeInfo = doc("What this recipe is.")
    model: ModelSpec = doc("The network's shape.")
    tokenizer: TokenizerSpec = doc("The vocabulary.")
    cluster: ClusterSpec = doc("Where it runs.")
    optimizer: OptimizerSpec = doc("The optimizer.", factory=OptimizerSpec)
    data: DataSpec = doc("How token files are read.", factory=DataSpec)
    checkpoint: CheckpointSpec = doc("Checkpoint policy.", factory=CheckpointSpec)
    runtime: RuntimeSpec = doc("Habits of the training loop.", factory=RuntimeSpec)
    sources: dict[str, SourceSpec] = doc("Data sources by name.", factory=dict)
    mixes: dict[str, MixSpec] = doc("Data mixes by name.", factory=dict)
    stages: list[Stage] = doc("The stages, in order.")
    departures: list[DepartureSpec] = doc("Values that follow the released runs rather than the paper, each with "
                                          "the paper's value and the artifact followed (`explain` shows them).",
                                          factory=list)
