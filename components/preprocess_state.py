"""What the Preprocess page keeps across a reload: the recipe run on every image and the last
auto-tuning, the image previewed, the view and its switches (the recipe itself is the Data page's)."""

from __future__ import annotations

from components.workspace import Kept

KEPT = Kept(
    state=("tune_result", "tune_made_on", "batch_result", "batch_recipe", "batch_record"),
    widgets=("pre_image", "pre_tab", "live_preview", "log_hist", "pre_run_name"),
    images=("pre_image",),
)
