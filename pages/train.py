"""Train: curate ground truth in the browser, then train a segmenter (a registry family with a
trainer: U-Net, Mask R-CNN, YOLO-seg, ...) on the user's cells in the background, watch its
curves, and find it on the Compare page."""

from __future__ import annotations

import streamlit as st

from components.curation_view import curation_view
from components.model_panel import current_device
from components.routing import page_with_images
from components.train_form import train_controls
from components.train_jobs import trainings
from components.trained_models import trained_models_panel


def train_page() -> None:
    if (ds := page_with_images("Train")) is None:
        return
    st.subheader("Curate labels")
    curation_view(ds, current_device())
    st.subheader("Train a model")
    train_controls(ds)
    st.subheader("Trainings")
    trainings()
    st.subheader("Trained models")
    trained_models_panel()


train_page()
