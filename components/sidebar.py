"""The sidebar every page shares: what is loaded and where models run."""

from __future__ import annotations

import streamlit as st

from components.auth import account_panel
from components.state import LESSON_KEY, dataset, is_untouched_example
from components.workspace import workspace_notes
from core.text import plural
from models.device import DEVICE_CHOICES, available_devices, resolve_device


def render_sidebar() -> None:
    ds = dataset()
    with st.sidebar:
        account_panel()  # who is signed in, and Sign out (nothing when sign-in is off)
        st.subheader("Dataset")
        if len(ds) == 0:
            st.caption("No images loaded. Add some on the **Data** page.")
        else:
            s = ds.summary()
            origin = st.session_state.get("dataset_origin")
            label = " (example)" if is_untouched_example() else " (the lesson's)" if origin == LESSON_KEY else ""
            st.markdown(
                f"**{plural(s['images'], 'image')}**{label} · "
                + ((f"**{plural(s['batches'], 'batch')}**" + (f" ({s['without_batch']} without)" if s["without_batch"]
                                                              else "")) if s["batches"] else "no batch assigned")
                + "  \n"
                f"**{s['with_gt']}** with ground truth · channels: {', '.join(map(str, s['channels']))}"
            )
        workspace_notes()
        st.subheader("Compute")
        devices = available_devices()  # lru_cached: torch is asked once per process
        choice = st.selectbox(
            "Device",
            DEVICE_CHOICES,
            key="device_choice",
            help="Where deep-learning models run. 'auto' uses a CUDA GPU, then Apple MPS (Apple silicon), then the CPU.",
        )
        try:
            st.caption(f"Using **{resolve_device(choice)}** · torch sees: " + "; ".join(d.description for d in devices))
        except ValueError:
            st.warning(f"No {choice.upper()} device here; models run on the CPU. Torch sees: "
                       + "; ".join(d.description for d in devices))
