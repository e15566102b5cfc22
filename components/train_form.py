"""The Train page's *Train a model* form: the family, the split, the model's name, the family's
main training settings, the CPU-time estimate, and the button that queues the training. The
form's rules (the name, a name taken, the held-out plates) are
:func:`workflows.training.check_training_request`'s, which the CLI's ``train`` shares."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from components.model_panel import current_device
from components.settings_widgets import field_widget
from components.training_state import pending_names, submit_training
from core.data.dataset import Dataset
from core.schema import fields_of
from core.text import duration, plural
from core.training.data import VAL_FRACTION
from models.registry import Trainer, families
from workflows.training import check_training_request

# The settings the page offers per family (the others keep their defaults), in order.
MAIN_SETTINGS = ("epochs", "batch_size", "lr", "patience", "seed")


def fresh_name() -> str:
    return f"cells-{datetime.now():%Y%m%d-%H%M%S}"


def train_controls(ds: Dataset) -> None:
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
    settings = settings_widgets(family, trainer, defaults)
    val_batches: list[str] = []
    val_fraction = VAL_FRACTION.default
    where, _ = st.columns([1.4, 1])
    if split == "plates":
        val_batches = where.multiselect("Held-out plates", batches, default=batches[-1:], key="tr.val_batches",
                                        help="These batches only validate.")
    else:
        val_fraction = field_widget(where, VAL_FRACTION, "tr.val_fraction", VAL_FRACTION.default, widget="slider")
    device = current_device()
    if trainer.estimate_seconds is not None and device == "cpu":  # the family's CPU-time estimate
        seconds = trainer.estimate_seconds(len(annotated), device=device, training=trainer.settings(
            {**defaults, **settings}), image_side=max(annotated[0].shape[:2]))
        st.warning(f"On this CPU a {trainable[family].label} takes about {duration(seconds)} at most for these settings "
                   "(early stopping may end it sooner). A GPU is much faster. "
                   + (trainer.start_note() if trainer.start_note else ""))
    problem = check_training_request(family, name, split=split, val_batches=val_batches, batches=batches,
                                     pending=pending_names(family))
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


def settings_widgets(family: str, trainer: Trainer, defaults: dict) -> dict:
    """The family's :data:`MAIN_SETTINGS` it declares, in a row, with their declared limits; the values."""
    declared = {f.name: f for f in fields_of(trainer.settings_class)}  # limits, labels, help
    shown = [key for key in MAIN_SETTINGS if key in declared]  # a family may declare fewer
    settings = {}
    for col, key in zip(st.columns(max(1, len(shown))), shown, strict=False):
        field = declared[key]
        settings[key] = field_widget(col, field, f"tr.fam.{family}.{key}", defaults[key], widget="number_input",
                                     **({"format": "%.4g"} if field.kind == "float" else {}))
    return settings
