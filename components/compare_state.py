"""What the Compare page keeps across a reload: the all-images run, SAM's prompts, the image, the
chosen models (those no longer known dropped) and their settings."""

from __future__ import annotations

from components.workspace import Kept


def _known_models(names: list[str]) -> list[str]:
    """A restored choice of models without those gone since (weights removed, a family dropped)."""
    from models.registry import list_models

    known = {m.name for m in list_models()}
    return [n for n in names if n in known]


KEPT = Kept(
    state=("cmp.all", "cmp.all_made", "cmp.all_record", "cmp.prompts"),
    widgets=("cmp.image", "cmp.models", "cmp.include_seen", "cmp.sam_model", "cmp.run_name"),
    prefixes=("cmp.set.",),
    images=("cmp.image",),
    filters={"cmp.models": _known_models},
)
