"""What the Data page and the sidebar keep across a reload: the dataset, its recipe and display,
the image shown large, the plate pattern, the compute device."""

from __future__ import annotations

from components.workspace import Kept

KEPT = Kept(
    state=("dataset", "dataset_origin", "dataset_version", "recipe", "channel_visibility"),
    widgets=("device_choice", "viewer_image", "batch_pattern", "channels_apply_all"),
    prefixes=("data_viewer_gt", "data_viewer_zoom"),
    images=("viewer_image",),
)
