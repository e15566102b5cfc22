"""The Explain page's Detectors view: what YOLO or R-CNN look at in a whole image (Eigen-CAM, or
Grad-CAM of one detection's score), computed on request where it is slow."""

from __future__ import annotations

import streamlit as st

from components.explain_state import cached_detector_cam, detector_cam_for
from components.image_viewer import picture
from components.model_panel import fetch_missing_weights, model_settings, readiness_label
from core.text import plural
from models.detector_cam import METHOD_TITLES, cam_methods_of, draw_detector_cam, highlighted
from models.registry import availability, get_model_info, list_models


def detector_view(ds, device: str) -> None:
    models = sorted((m.name for m in list_models("segment") if cam_methods_of(m)),
                    key=lambda n: not availability(n)[0])  # those ready to run first
    c1, c2, c3, c4 = st.columns([1.2, 1.2, 1, 1], vertical_alignment="bottom")
    image_name = c1.selectbox("Image", ds.names, key="ex.det_image", help="The image to explain the detector on.")
    name = c2.selectbox("Detector", models, key="ex.det_model", format_func=readiness_label(models),
                        help="YOLO: Eigen-CAM (the main component of a layer's activations). Faster / Mask R-CNN: "
                             "Eigen-CAM, or Grad-CAM of the boxes' scores.")
    method = c3.selectbox("Method", cam_methods_of(get_model_info(name)), key="ex.det_method", format_func=METHOD_TITLES.get,
                          help="Eigen-CAM needs no class and is the same for every detection; Grad-CAM follows the "
                               "chosen detection's score.")
    opacity = c4.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="ex.det_opacity", help="0: the image; 1: the map.")
    settings = model_settings("ex.det", [name], f"Detector settings ({name})")
    if not fetch_missing_weights([name], key="ex.det"):
        return
    image = ds[image_name]
    slow = get_model_info(name).slow_on_cpu and device == "cpu"
    if slow and cached_detector_cam(image, name, settings, device, method=method, detection=None) is None:
        st.info(f"**{name}** takes 10-30 s per image on this CPU.")
        if not st.button("Compute the CAM", type="primary", key="ex.det_run",
                         help="Detect, then compute the CAM over the whole image."):
            return
    first = detector_cam_for(image, name, settings, device, method=method, detection=None)
    if isinstance(first, str):
        st.error(first)
        return
    count = first.instances.count
    choices = ["all", *range(count)]
    detection = st.selectbox("Detection", choices, key="ex.det_which",
                             format_func=lambda d: f"all {count} detections" if d == "all" else f"detection {d}",
                             help="Grad-CAM of one detection's score, or of all of them together.")
    if detection != "all" and not first.targeted:  # Eigen-CAM: the same map, the box highlighted
        first = highlighted(first, int(detection))
        detection = "all"
    if detection != "all" and slow and cached_detector_cam(image, name, settings, device, method=method,
                                                           detection=int(detection)) is None:
        if not st.button(f"Compute the CAM of detection {detection}", type="primary", key="ex.det_run_one"):
            picture(draw_detector_cam(image, first, opacity=opacity), caption="All detections (computed before)")
            return
    result = first if detection == "all" else detector_cam_for(image, name, settings, device, method=method,
                                                               detection=int(detection))
    if isinstance(result, str):
        st.error(result)
        return
    for note in result.notes:
        st.caption(note)
    picture(draw_detector_cam(image, result, opacity=opacity),
            caption=f"{METHOD_TITLES[result.method]} of {name} at {result.layer} · {plural(count, 'detection')} · "
                    f"{result.seconds:.1f} s")
