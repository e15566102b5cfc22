"""Train: curate ground truth in the browser, then train a segmenter (a registry family with a
trainer: U-Net, Mask R-CNN, YOLO-seg, ...) on the user's cells in the background, watch its
curves, and find it on the Compare page."""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import streamlit as st

from components.curation_state import (
    START_EMPTY,
    START_GT,
    current_curation,
    save_curation,
    start_curation,
)
from components.downloads import download_button
from components.image_viewer import cached_composite
from components.label_editor import TOOLS, apply_event, label_editor
from components.model_panel import add_to_comparison, current_device, fetch_missing_weights, model_settings
from components.routing import page_with_images
from components.settings_widgets import field_widget
from components.training_state import my_jobs, submit_training, training_queue
from core.figures.training import training_figure
from core.io.export import label_tiff_bytes
from core.schema import fields_of
from core.text import duration, plural
from core.training.jobs import TrainingJob
from core.training.label_edit import LabelEditError
from models.registry import families, get_family, list_models, trainer_of

# The settings the page offers per family (the others keep their defaults), in order.
MAIN_SETTINGS = ("epochs", "batch_size", "lr", "patience", "seed")

STATE_STYLE = {"queued": ":material/schedule:", "running": ":material/play_circle:", "stopping": ":material/stop_circle:",
               "done": ":material/check_circle:", "stopped": ":material/stop_circle:", "failed": ":material/error:"}
MAX_NAME = 64


TOOL_LABELS = {"delete": "Delete", "polygon": "Polygon", "brush": "Brush", "erase": "Erase", "merge": "Merge",
               "split": "Split"}
TOOL_HELP = ("Delete: click a cell. Polygon: click its corners, double-click (or click the first point) to close; "
             "Escape cancels, Backspace removes the last point. Brush: drag to paint a new cell (over background "
             "only). Erase: drag to remove pixels. Merge: click two cells. Split: drag a line across a cell.")


def curation_view(ds, device: str) -> None:
    """Make ground truth: start from a file, a model or nothing, correct it, save it."""
    c1, c2, c3 = st.columns([1.2, 1.4, 1], vertical_alignment="bottom")
    name = c1.selectbox("Image", ds.names, key="tr.cur_image", help="The image whose labels to curate.")
    image = ds[name]
    starts = ([START_GT] if image.gt is not None else []) + [m.name for m in list_models("segment")] + [START_EMPTY]
    start = c2.selectbox("Start from", starts, key="tr.cur_start",
                         help="The image's ground truth, a model's result (the classical recipe is quick and good on "
                              "fluorescent nuclei), or nothing.")
    curation = current_curation(image)
    settings = model_settings("tr.cur", [start], f"Settings of {start}") if start not in (START_GT, START_EMPTY) else {}
    if c3.button("Start editing" if curation is None else "Start again", key="tr.cur_begin", width="stretch",
                 type="primary" if curation is None else "secondary",
                 help="Load these labels into the editor (edits not saved are dropped)."):
        if start in (START_GT, START_EMPTY) or fetch_missing_weights([start], key="tr.cur"):
            try:
                with st.spinner(f"{start} on {name}…"):
                    start_curation(image, start, settings, device)
            except (ValueError, RuntimeError) as exc:
                st.error(f"Could not start from {start}: {exc}")
                return
            st.rerun()  # the button now reads "Start again"
    if curation is None:
        st.caption("Choose where to start and press **Start editing**; corrected labels become the image's ground "
                   "truth, for training and for the scores on the Compare page.")
        return
    history = curation.history
    picture_col, tools = st.columns([2.2, 1])
    tool = tools.radio("Tool", TOOLS, key="tr.tool", format_func=TOOL_LABELS.get, help=TOOL_HELP)
    radius = tools.slider("Brush radius", 1, 30, 5, key="tr.radius", help="In image pixels.")
    u1, u2 = tools.columns(2)
    if u1.button("Undo", key="tr.undo", disabled=not history.can_undo, width="stretch", icon=":material/undo:",
                 help="Take the last edit back (as often as you like, back to where you started)."):
        st.toast(f"Undone: {history.undo()}")
    if u2.button("Redo", key="tr.redo", disabled=not history.can_redo, width="stretch", icon=":material/redo:",
                 help="Make an undone edit again."):
        st.toast(f"Redone: {history.redo()}")

    def edited(event: dict) -> None:
        try:
            st.session_state["tr.said"] = ("ok", apply_event(history, event, brush_radius=radius))
        except LabelEditError as exc:
            st.session_state["tr.said"] = ("error", str(exc))

    rgb = cached_composite(image, image.hash, image.channels, (True,) * image.shape[2])
    with picture_col:
        label_editor(rgb, history.current, key="tr.editor", tool=tool, brush_radius=radius, on_edit=edited)
    said = st.session_state.pop("tr.said", None)
    if said:
        (st.toast if said[0] == "ok" else tools.warning)(said[1])
    cells = int(len(np.unique(history.current)) - (1 if (history.current == 0).any() else 0))
    tools.caption(f"{plural(cells, 'cell')} · {curation_state_text(curation)}"
                  + (f" · last: {history.descriptions[-1]}" if history.descriptions else ""))
    if (saved := st.session_state.pop("tr.saved", None)) and curation.is_saved:
        tools.success(saved, icon=":material/check_circle:")
    if tools.button("Save as ground truth", type="secondary" if curation.is_saved else "primary", key="tr.save",
                    width="stretch", help="These labels become the image's ground truth in this workspace (the Data "
                                          "page's table says 'curated'); Train and Compare use them."):
        save_curation(image, curation)
        st.session_state["tr.saved"] = (f"Saved: {plural(cells, 'cell')} are {name}'s ground truth now (the Data "
                                        "page's table says 'curated'; Train and Compare use them).")
        st.rerun()
    download_button(tools, "Download labels (TIFF)", label_tiff_bytes(np.asarray(history.current)),
                          file_name=f"{name}_mask.tif", mime="image/tiff", key="tr.dl_labels", width="stretch",
                          help="A label image (0 = background, 1..N = cells) that the Data page reads back as ground "
                               "truth.")


def curation_state_text(curation) -> str:
    """How far the labels in the editor are from the start and from the last save."""
    history = curation.history
    done = f"{plural(history.n_edits, 'edit')} from {curation.start}"
    if curation.saved is None:
        return done + " · not saved"
    if curation.is_saved:
        return done + " · saved as ground truth"
    return done + " · changed since the save"


def fresh_name() -> str:
    return f"cells-{datetime.now():%Y%m%d-%H%M%S}"


def name_taken(family: str, name: str) -> str:
    """Why ``name`` cannot be used for a new ``family`` model ("" if it can): a saved model or a
    training not finished has it (a new one would overwrite it)."""
    fam, trainer = trainer_of(family)
    try:
        exists = trainer.checkpoint_path(name).exists()
    except (OSError, ValueError) as exc:
        return f"'{name[:40]}…' cannot be a file name here ({exc.__class__.__name__}): choose a shorter, plainer name."
    if exists:
        return f"A {fam.label} named '{name}' exists already: choose another name."
    if any(j.name == name and j.family == family and not j.is_finished for j in training_queue().jobs()):
        return f"A training named '{name}' is queued or running: choose another name."
    return ""


def train_controls(ds) -> None:
    annotated = [img for img in ds if img.gt is not None]
    batches = sorted({img.batch for img in annotated})
    st.caption(f"{plural(len(annotated), 'image')} with ground truth ({plural(len(batches), 'batch')}) of "
               f"{plural(len(ds), 'image')}: upload masks on the Data page, or curate labels above.")
    if len(annotated) < 2:
        st.warning("Training needs at least 2 images with ground truth: one to learn from and one to validate on.")
        return
    c1, c2, c3 = st.columns([1, 1.4, 1.2], vertical_alignment="bottom")
    trainable = {f.name: f for f in families(trainable=True)}
    family = c1.selectbox("Model", list(trainable), key="tr.family", format_func=lambda f: trainable[f].label,
                          help="\n\n".join(f"**{f.label}**: {f.description}" for f in trainable.values()))
    trainer = trainable[family].trainer
    split = c2.segmented_control("Validate on", ("images", "plates"), default="images", required=True,
                                 key="tr.split", format_func={"images": "a share of the images",
                                                              "plates": "held-out plates"}.get,
                                 help="A seeded random share of the images, or whole batches the model never sees "
                                      "in training: does it carry over to a new plate?")
    st.session_state.setdefault("tr.name", fresh_name())
    name = c3.text_input("Model name", key="tr.name",
                         help="The trained model appears under this name on the Compare page.")
    defaults = trainer.default_settings()
    declared = {f.name: f for f in fields_of(trainer.settings_class)}  # limits, labels, help
    shown = [key for key in MAIN_SETTINGS if key in declared]  # a family may declare fewer
    cols = st.columns(max(1, len(shown)))
    settings = {}
    for col, key in zip(cols, shown, strict=False):
        field = declared[key]
        settings[key] = field_widget(col, field, f"tr.fam.{family}.{key}", defaults[key], widget="number_input",
                                     **({"format": "%.4g"} if field.kind == "float" else {}))
    val_batches: list[str] = []
    val_fraction = 0.2
    where, _ = st.columns([1.4, 1])
    if split == "plates":
        val_batches = where.multiselect("Held-out plates", batches, default=batches[-1:], key="tr.val_batches",
                                           help="These batches only validate.")
    else:
        val_fraction = where.slider("Validation share", 0.1, 0.5, 0.2, 0.05, key="tr.val_fraction",
                                       help="The share of images that only validate.")
    device = current_device()
    if trainer.estimate_seconds is not None and device == "cpu":  # the family's CPU-time estimate
        seconds = trainer.estimate_seconds(len(annotated), device=device, training=trainer.settings(
            {**defaults, **settings}), image_side=max(annotated[0].shape[:2]))
        st.warning(f"On this CPU a {trainable[family].label} takes about {duration(seconds)} at most for these settings "
                   "(early stopping may end it sooner). A GPU is much faster. "
                   + (trainer.start_note() if trainer.start_note else ""))
    problem = ("" if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or "") else
               "A model name uses letters, digits, '.', '_' and '-' only.")
    if not problem and len(name) > MAX_NAME:
        problem = f"A model name has at most {MAX_NAME} characters (this one has {len(name)})."
    taken = name_taken(family, name) if not problem else ""
    if taken:
        problem = taken
    if split == "plates" and not val_batches:
        problem = "Choose at least one plate to validate on."
    if split == "plates" and set(val_batches) == set(batches):
        problem = "Keep at least one plate for training."
    if problem:
        st.error(problem)
    def start() -> None:
        submit_training(family, annotated, name=name, settings=settings, val_batches=val_batches,
                        val_fraction=val_fraction, device=device)
        st.toast(f"{trainable[family].label} '{name}' queued.")
        st.session_state["tr.name"] = fresh_name()  # the next training gets its own name

    st.button("Start training", type="primary", key="tr.start", disabled=bool(problem), on_click=start,
              help="Runs in the background on this server: you can use other pages, reload, or come back later. "
                   "One training runs at a time; others wait in line.")


def job_view(job: TrainingJob) -> None:
    head, stop = st.columns([4, 1], vertical_alignment="center")
    try:
        label = get_family(job.family).label
    except ValueError:  # a family no longer registered
        label = job.family
    head.markdown(f"{STATE_STYLE.get(job.state, '')} **{label} '{job.name}'** · {job.state}"
                  + (f" · {job.position} ahead of it" if job.state == "queued" and job.position else ""))
    if not job.is_finished and stop.button("Stop", key=f"tr.stop.{job.id}", width="stretch",
                                           help="Ends training after the current step; the best epoch so far is kept."):
        training_queue().stop(job.id)
        st.rerun()
    if job.state in ("running", "stopping"):
        st.progress(min(max(job.fraction, 0.0), 1.0), text=job.message or "starting…")
    if job.epochs:
        st.plotly_chart(training_figure(job.epochs, best_epoch=job.best_epoch), width="stretch",
                        key=f"tr.curve.{job.id}.{len(job.epochs)}", config={"displaylogo": False})
    if job.state == "failed":
        st.error(f"Training failed: {job.error}")
    elif job.is_finished and job.result:
        metrics = job.result.get("metrics", {})
        if metrics.get("f1", 0.0) < 0.05:
            st.warning(f"**{job.result['model']}** was saved ({job.result.get('stopped', job.state)}) but found almost "
                       f"no cells on the validation images (F1 {metrics.get('f1', 0.0):.3f}): train longer, or start "
                       "from pretrained weights, before using it.")
            return
        averaged = job.result.get("averaged_epochs") or []
        kept = (f"the weights of epochs {averaged[0]}-{averaged[-1]} averaged (the best single epoch was "
                f"{job.result.get('best_epoch')})" if averaged else f"best epoch {job.result.get('best_epoch')}")
        st.success(f"**{job.result['model']}** is ready ({job.result.get('stopped', job.state)}): {kept}, validation F1 {metrics.get('f1', float('nan')):.3f} at IoU 0.5 "
                   f"(precision {metrics.get('precision', float('nan')):.3f}, recall "
                   f"{metrics.get('recall', float('nan')):.3f}) on {plural(job.result.get('val_images', 0), 'image')}. "
                   "It is in the Compare page's model list now.")
        if st.button("Compare it with the other models", key=f"tr.compare.{job.id}", icon=":material/compare:",
                     on_click=add_to_comparison, args=(job.result["model"],),
                     help="Open the Compare page with this model added to the chosen ones."):
            st.switch_page("pages/compare.py")


def jobs_view() -> None:
    jobs = my_jobs()
    if not jobs:
        st.caption("No training yet in this workspace.")
        return
    for job in jobs[:5]:
        with st.container(border=True):
            job_view(job)


def train_page() -> None:
    if (ds := page_with_images("Train")) is None:
        return
    device = current_device()
    st.subheader("Curate labels")
    curation_view(ds, device)
    st.subheader("Train a model")
    train_controls(ds)
    st.subheader("Trainings")
    active = any(not j.is_finished for j in my_jobs())
    # While something trains the list refreshes itself every 2 s; otherwise it is drawn once.
    st.fragment(run_every=2.0 if active else None)(jobs_view)()


train_page()
