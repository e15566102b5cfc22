"""Compare models: several segmenters on the same image, side by side, with numbers."""

from __future__ import annotations

import streamlit as st

from components.compare_all import all_images
from components.compare_views import numbers, overlays, seen_by
from components.model_panel import (
    cached_result,
    current_device,
    fetch_missing_weights,
    model_guide,
    model_picker,
    model_settings,
    result_key,
    run_models,
)
from components.routing import page_with_images
from components.sam_prompt import sam_prompt_view
from core.evaluation.score_tables import seen_label
from core.text import plural
from models.registry import get_model_info


def compare_page() -> None:
    if (ds := page_with_images("Compare models")) is None:
        return
    c1, c2 = st.columns([3, 1.2], vertical_alignment="bottom")
    image = ds[c1.selectbox("Image", ds.names, key="cmp.image", help="The image every model runs on.")]
    if c2.button("What each model is", icon=":material/info:", key="cmp.guide", width="stretch",
                 help="Every model: what it was trained on, its licence, whether its weights are here."):
        model_guide()
    chosen = model_picker("cmp.models")  # a row of its own: every chosen model's chip stays readable
    names = fetch_missing_weights(chosen, key="cmp.models")
    device = current_device()
    s1, s2 = st.columns([3.2, 1], vertical_alignment="top")
    with s1:
        settings = model_settings("cmp.set", chosen)  # settings can be read and set before a download
    slow = [n for n in names if get_model_info(n).slow_on_cpu]
    # highlighted only while a chosen model waits for it: every result shown, nothing is left to press for
    needed = device == "cpu" and any(cached_result(image, n, settings, device) is None for n in slow)
    run_now = s2.button(f"Run {plural(len(names), 'model')}", type="primary" if needed else "secondary",
                        disabled=not names, key="cmp.run",
                        width="stretch", help="Classical and YOLO run as soon as they are chosen; SAM, Cellpose-SAM, InstanSeg and R-CNN on "
                        "the CPU wait for this button (tens of seconds to minutes each). Results are cached per image and settings.")
    if waiting_weights := [n for n in chosen if n not in names]:
        s2.caption(f"Leaves out {', '.join(waiting_weights)}: no weights here yet (see above).")
    tabs = st.tabs(["This image", "All images", "Prompt SAM"], on_change="rerun", key="cmp.tab")
    if tabs[0].open:
        with tabs[0]:
            results = run_models(image, names, settings, device, all_now=run_now)
            waiting = [n for n in slow if n not in results and device == "cpu"]
            if waiting:
                st.info(f"Press **Run** for {', '.join(waiting)} (slow on the CPU).")
            if results:
                seen = seen_by(list(results))
                overlays(image, results, {n: seen_label(s, image) for n, s in seen.items()})
                numbers(image, results, tuple(result_key(image, n, settings, device) for n in results), settings, device,
                        seen)
    if tabs[1].open:
        with tabs[1]:
            all_images(names, settings, device)
    if tabs[2].open:
        with tabs[2]:
            sam_prompt_view(image, device, offered=chosen)


compare_page()
