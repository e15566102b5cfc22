"""The Data page through Streamlit's AppTest: example at start, uploads, errors, edits."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, blobs, png_bytes, tiff_bytes
from streamlit.testing.v1 import AppTest

TIMEOUT = 120


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _upload(at: AppTest, files, replace: bool = True) -> AppTest:
    uploader = next(u for u in at.file_uploader if u.label == "Add images")
    uploader.set_value(files)
    next(c for c in at.checkbox if c.label == "Replace the current images").set_value(replace)
    next(b for b in at.button if b.label == "Load files").click()
    return at.run()


def test_example_dataset_is_shown_without_upload(app):
    ds = app.session_state["dataset"]
    assert len(ds) == 12 and ds.summary()["batches"] == 3
    assert any("example dataset" in i.value for i in app.info)
    assert any("**12 images** (example) · **3 batches**" in m.value for m in app.sidebar.markdown)
    assert app.selectbox(key="viewer_image").value == "plateA_field1"
    assert len(app.get("arrow_data_frame")) >= 1 or len(app.dataframe) >= 1


def test_upload_replaces_example_and_shows_success(app):
    at = _upload(app, [("cells.tif", tiff_bytes(blobs()), "image/tiff")])
    assert not at.exception
    ds = at.session_state["dataset"]
    assert ds.names == ["cells"]
    assert ds["cells"].pixels.dtype == np.uint16
    assert (ds["cells"].batch, ds["cells"].condition) == ("unassigned", "")
    assert any("Loaded 1 image" in s.value for s in at.success)
    assert any("**1 image** · no batch assigned" in m.value for m in at.sidebar.markdown)


def test_the_loaded_message_goes_once_an_image_it_names_is_removed(app):
    """Defect: "Loaded 2 images" stayed up after one of them was removed."""
    at = _upload(app, [("a.tif", tiff_bytes(blobs()), "image/tiff"), ("b.tif", tiff_bytes(blobs(seed=1)), "image/tiff")])
    assert [s.value for s in at.success] == ["Loaded 2 images: a, b"]
    at.text_input[0].set_value(r"(?P<batch>[ab])")  # an edit that keeps the images keeps the message
    next(b for b in at.button if b.label == "Apply pattern").click()
    at.run()
    assert [s.value for s in at.success] == ["Loaded 2 images: a, b"]
    next(m for m in at.multiselect if m.label == "Remove images").set_value(["b"])
    at.run()
    next(b for b in at.button if b.label == "Remove 1 image").click()
    at.run()
    assert not at.exception and at.session_state["dataset"].names == ["a"]
    assert not any("Loaded" in s.value for s in at.success)
    assert "load_messages" not in at.session_state


def test_bad_upload_shows_error_and_keeps_good_files(app):
    at = _upload(
        app,
        [("broken.png", b"\x89PNG\r\n\x1a\ngarbage", "image/png"), ("good.png", png_bytes(blobs(dtype=np.uint8)), "image/png")],
        replace=False,
    )
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("**broken.png**:") for e in errors)
    ds = at.session_state["dataset"]
    assert "good" in ds.names and len(ds) == 13  # added next to the example


def test_batch_pattern_reassigns_batches(app):
    app.text_input[0].set_value(r"(?P<batch>field\d)")
    next(b for b in app.button if b.label == "Apply pattern").click()
    at = app.run()
    ds = at.session_state["dataset"]
    assert ds["plateB_field3"].batch == "field3"
    assert ds.summary()["batches"] == 4


def test_invalid_pattern_is_explained(app):
    app.text_input[0].set_value("(unclosed")
    next(b for b in app.button if b.label == "Apply pattern").click()
    at = app.run()
    assert any("invalid pattern" in e.value for e in at.error)


def test_ground_truth_with_wrong_shape_shows_error(app):
    gt_uploader = next(u for u in app.file_uploader if u.label == "Ground truth for this image")
    gt_uploader.set_value(("wrong.tif", tiff_bytes(np.zeros((10, 10), np.uint16)), "image/tiff"))
    at = app.run()
    assert any("**wrong.tif**" in e.value and "10x10" in e.value for e in at.error)
    assert at.session_state["dataset"]["plateA_field1"].gt.shape == (512, 512)  # old GT kept


def test_clear_and_reload_example(app):
    next(b for b in app.button if b.label == "Clear all").click()
    at = app.run()
    assert len(at.session_state["dataset"]) == 0
    assert any("No images loaded" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Load example dataset").click()
    at = at.run()
    assert len(at.session_state["dataset"]) == 12


def test_channel_colour_change_applies_to_all_images(app):
    app.selectbox(key="ch_plateA_field1_0_color").set_value("gray")
    at = app.run()
    assert not at.exception
    ds = at.session_state["dataset"]
    assert all(img.channels[0].color == "gray" for img in ds)


def test_hpa_set_and_zip_with_masks_upload(app, example_images):
    from core.io.export import dataset_zip

    hpa = [(f"cellA_{c}.png", png_bytes(blobs(dtype=np.uint8, seed=i)), "image/png")
           for i, c in enumerate(("red", "green", "blue", "yellow"))]
    at = _upload(app, hpa + [("plates.zip", dataset_zip(example_images[:2]), "application/zip")])
    assert not at.exception and not at.error
    ds = at.session_state["dataset"]
    assert ds.names == ["cellA", "plateA_field1", "plateA_field2"]
    assert [c.name for c in ds["cellA"].channels] == ["red", "green", "blue", "yellow"]
    assert ds["plateA_field2"].n_cells_gt == example_images[1].n_cells_gt
    assert ds["plateA_field2"].condition == "control"


def test_zoom_view_draws_a_plotly_figure(app):
    app.toggle(key="data_viewer_zoom").set_value(True)
    at = app.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1


def test_load_without_files_says_what_to_do(app):
    next(b for b in app.button if b.label == "Load files").click()
    at = app.run()
    assert any("No files chosen yet" in w.value for w in at.warning)
    assert len(at.session_state["dataset"]) == 12


def test_channel_visibility_belongs_to_the_image(app):
    """Defect: hiding channel 0 of a 3-channel image hid the only channel of the next image."""
    at = _upload(app, [("one.tif", tiff_bytes(blobs()), "image/tiff")], replace=False)
    at.checkbox(key="data_viewer_show_plateA_field1_0").set_value(False).run()
    at.selectbox(key="viewer_image").set_value("one").run()
    assert at.checkbox(key="data_viewer_show_one_0").value is True
    assert not any("is hidden" in i.value for i in at.info)
    at.checkbox(key="data_viewer_show_one_0").set_value(False).run()
    assert any("Every channel of one is hidden" in i.value for i in at.info)
    at.selectbox(key="viewer_image").set_value("plateA_field1").run()
    shown = [at.checkbox(key=f"data_viewer_show_plateA_field1_{i}").value for i in range(3)]
    assert shown == [False, True, True] and not at.exception


def test_a_channel_edit_leaves_images_with_other_channels_alone(app):
    """Defect: renaming a channel of an uploaded RGB image renamed (and re-roled) the example's channels."""
    rgb = np.dstack([blobs(dtype=np.uint8, seed=s) for s in range(3)])
    at = _upload(app, [("rgb.png", png_bytes(rgb), "image/png")], replace=False)
    at.selectbox(key="viewer_image").set_value("rgb").run()
    example_channels = at.session_state["dataset"]["plateA_field1"].channels
    at.text_input(key="ch_rgb_0_name").set_value("R1").run()
    ds = at.session_state["dataset"]
    assert ds["rgb"].channels[0].name == "R1" and ds["plateA_field1"].channels == example_channels
    at.selectbox(key="viewer_image").set_value("plateB_field1").run()
    at.slider(key="ch_plateB_field1_0_clip").set_value((2.0, 99.8)).run()
    ds = at.session_state["dataset"]
    assert all(ds[n].channels[0].clip_low == 2.0 for n in ds.names if n != "rgb")  # the whole experiment
    assert ds["rgb"].channels[0].clip_low != 2.0 and not at.exception


def test_a_file_the_loader_cannot_use_is_named_after_load(app):
    """Defect: a .txt was dropped by the browser's type filter with a note that vanished on Load."""
    at = _upload(app, [("notes.txt", b"hello", "text/plain"), ("good.tif", tiff_bytes(blobs()), "image/tiff")],
                 replace=False)
    assert any(e.value.startswith("**notes.txt**: unsupported file type .txt") for e in at.error)
    assert "good" in at.session_state["dataset"].names


def test_the_table_counts_ground_truth_cells_as_integers_blank_without_ground_truth(app):
    at = _upload(app, [("nogt.tif", tiff_bytes(blobs()), "image/tiff")], replace=False)
    table = at.session_state["dataset"].table()
    assert str(table.gt_cells.dtype) == "Int64" and table.set_index("name").gt_cells.isna()["nogt"]
    assert "88,plateA" not in table.to_csv() and ",88," in table.to_csv(index=False).replace("\n", ",")


def test_a_batch_cell_emptied_in_the_table_is_no_batch_called_nan():
    import numpy as np
    import pandas as pd

    from components.dataset_table import edited_text

    edited = pd.DataFrame({"name": ["a", "b", "c"], "batch": [None, np.nan, " plate2 "],
                           "condition": [np.nan, "treated", None]})
    clean = edited_text(edited)
    assert list(clean["batch"]) == ["", "", "plate2"] and list(clean["condition"]) == ["", "treated", ""]
    assert list(edited["batch"][2:]) == [" plate2 "]  # the editor's own frame is left as it was


def test_renaming_a_channel_leaves_the_upload_forms_replace_choice_as_it_was(app):
    """Defect: a channel rename marked the example edited, which unticked "Replace the current
    images" by itself; a user clicking it to untick it then replaced the images."""
    replace = next(c for c in app.checkbox if c.label == "Replace the current images")
    assert replace.value is True
    app.text_input(key="ch_plateA_field1_2_name").set_value("p53 stain").run()
    assert app.session_state["dataset"]["plateA_field1"].channels[2].name == "p53 stain"
    assert next(c for c in app.checkbox if c.label == "Replace the current images").value is True
    assert any("(example)" in m.value for m in app.sidebar.markdown) and not app.exception
