"""The Train page's *Trained models*: every model trained on this server (shared: everyone here
finds them on the Compare, Cell map and Explain pages), who trained it when sign-in is on, and
deleting one after an "I am sure", refused while a training writes it and, with sign-in on, to
anyone but its owner (:func:`components.auth.delete_refusal`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components.auth import delete_refusal
from components.model_panel import result_store, shared_model
from components.results_state import date_text
from components.training_state import training_queue
from models.registry import get_family, trained_name
from models.trained_models import TrainedModel, delete_trained_model, trained_models
from models.weights import weights_dir

DELETED_KEY = "tr.del.done"  # the model just deleted, said once on the next run


def busy_models() -> set[str]:
    """The models trainings are writing now (queued or running, in any workspace)."""
    return {trained_name(job.family, job.name) for job in training_queue().jobs() if not job.is_finished}


def _label(family: str) -> str:
    try:
        return get_family(family).label
    except ValueError:  # a family no longer registered
        return family


def models_table(models: list[TrainedModel]) -> pd.DataFrame:
    """One row per model trained here, as the page lists them."""
    rows = [{"name": m.name, "model": _label(m.family), "trained": date_text(m.created) if m.created else "",
             "owner": m.owner or "", "validation F1": m.f1, "MB": round(m.size_bytes / 2**20, 1)} for m in models]
    return pd.DataFrame(rows, columns=["name", "model", "trained", "owner", "validation F1", "MB"])


def _forget(name: str) -> None:
    """Drop what this server holds of a deleted model: a model trained again under its name must
    not be served from the old one's loaded weights or results."""
    shared_model.clear()  # at most a few loaded models; each reloads from disk when next used
    result_store().discard_where(lambda key: isinstance(key, tuple) and len(key) > 1 and key[1] == name)


def delete_control(model: TrainedModel, busy: set[str]) -> None:
    """The confirmation and the button for ``model``, or why it may not be deleted here."""
    if refusal := delete_refusal(model.owner, "model", f"python -m core models delete {model.name}"):
        st.info(refusal, icon=":material/lock:")
        return
    if model.name in busy:
        st.warning(f"{model.name} is being trained now: stop its training below or wait for it to end, then delete it.")
        return
    st.warning("Trained models are shared by everyone using this server: deleting it deletes it for them too "
               "(pages that chose it lose it), and it cannot be undone.")
    sure = st.checkbox(f"I am sure: delete “{model.name}” for everyone", key="tr.del.sure", value=False,
                       help="Deleting a trained model removes its weights from the server.")
    if st.button("Delete the model", type="primary", disabled=not sure, key="tr.del.go", icon=":material/delete:",
                 help="Deletes the checkpoint and its training record from the weights folder."):
        try:
            delete_trained_model(model.name, busy=busy_models())  # asked again: a training may have started since
        except (OSError, ValueError) as exc:
            st.error(f"The model could not be deleted: {exc}")
            return
        _forget(model.name)
        st.session_state[DELETED_KEY] = model.name
        for key in ("tr.del.model", "tr.del.sure"):
            st.session_state.pop(key, None)
        st.rerun()


def trained_models_panel() -> None:
    """The models trained here as a table, and deleting one."""
    if (gone := st.session_state.pop(DELETED_KEY, None)) is not None:
        st.success(f"Deleted the model “{gone}”.")
    models = trained_models()
    if not models:
        st.caption(f"No model trained on this server yet. Models trained here are kept in `{weights_dir()}`.")
        return
    st.dataframe(models_table(models), hide_index=True, width="stretch", key="tr.models",
                 column_config={"validation F1": st.column_config.NumberColumn(format="%.3f")})
    st.caption(f"Kept in `{weights_dir()}` and shared with everyone using this server: they are in every page's "
               "model lists. The owner is recorded when the server has sign-in on.")
    names = [m.name for m in models]
    if st.session_state.get("tr.del.model") not in names:
        st.session_state.pop("tr.del.model", None)
    choice = st.selectbox("Delete a trained model", names, index=None, key="tr.del.model", placeholder="Choose a model",
                          help="Choose the model to delete; a confirmation follows.")
    if choice is not None:
        delete_control(next(m for m in models if m.name == choice), busy_models())
