"""Label editing for the Train page's curation tool: every operation on small hand-made label
images with exact expected outputs, and the undo/redo history."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from core.training import label_edit as le
from core.training.label_edit import EditHistory, LabelEditError


def two_cells() -> np.ndarray:
    """8 x 8: cell 1 (3 x 3 top left), cell 2 (2 x 4 bottom right), the rest background."""
    labels = np.zeros((8, 8), np.int32)
    labels[0:3, 0:3] = 1
    labels[5:7, 3:7] = 2
    return labels


def dumbbell() -> np.ndarray:
    """Two 5 x 4 blocks joined by a 1-pixel bridge in row 2, all cell 3; cell 1 elsewhere."""
    labels = np.zeros((7, 13), np.int32)
    labels[0:5, 0:4] = 3
    labels[2, 4:7] = 3
    labels[0:5, 7:11] = 3
    labels[6, 0:2] = 1
    return labels


# --- delete ---------------------------------------------------------------------------------

def test_delete_clears_only_that_cell():
    labels = two_cells()
    edit = le.delete(labels, 2)
    expected = two_cells()
    expected[5:7, 3:7] = 0
    np.testing.assert_array_equal(edit.labels, expected)
    assert edit.description == "deleted cell 2"
    assert edit.ids == (2,)


def test_delete_at_takes_the_cell_under_the_click_with_canvas_coordinates_floored():
    edit = le.delete_at(two_cells(), 2.9, 0.2)  # y, x inside pixel (2, 0)
    assert set(np.unique(edit.labels)) == {0, 2}
    assert edit.description == "deleted cell 1"


def test_delete_at_background_or_outside_is_refused():
    with pytest.raises(LabelEditError, match=r"no cell at \(5, 0\)"):
        le.delete_at(two_cells(), 0, 5)
    with pytest.raises(LabelEditError, match="outside the image"):
        le.delete_at(two_cells(), 8, 0)
    with pytest.raises(LabelEditError, match="there is no cell 9"):
        le.delete(two_cells(), 9)


# --- polygon --------------------------------------------------------------------------------

def test_add_polygon_fills_the_pixels_whose_centres_are_inside():
    labels = two_cells()
    edit = le.add_polygon(labels, [(4, 0), (8, 0), (8, 3), (4, 3)])  # x 4..8, y 0..3
    expected = two_cells()
    expected[0:3, 4:8] = 3
    np.testing.assert_array_equal(edit.labels, expected)
    assert edit.description == "added cell 3 (polygon, 12 px)"
    assert edit.ids == (3,)


def test_add_polygon_paints_only_background_unless_overwrite():
    square = [(1, 1), (5, 1), (5, 4), (1, 4)]  # pixels rows 1..3, cols 1..4, 12 px; 4 of them are cell 1
    keep = le.add_polygon(two_cells(), square)
    expected = two_cells()
    expected[1:4, 1:5][expected[1:4, 1:5] == 0] = 3
    np.testing.assert_array_equal(keep.labels, expected)
    assert keep.description == "added cell 3 (polygon, 8 px)"

    over = le.add_polygon(two_cells(), square, overwrite=True)
    expected = two_cells()
    expected[1:4, 1:5] = 3
    np.testing.assert_array_equal(over.labels, expected)
    assert over.description == "added cell 3 (polygon, 12 px)"


def test_add_polygon_partly_outside_the_image_is_clipped():
    edit = le.add_polygon(np.zeros((5, 5), np.int32), [(-10, -10), (2, -10), (2, 2), (-10, 2)])
    expected = np.zeros((5, 5), np.int32)
    expected[0:2, 0:2] = 1
    np.testing.assert_array_equal(edit.labels, expected)
    # a triangle over the bottom-right corner: centres (4.5, 4.5), (3.5, 4.5), (4.5, 3.5) are inside x + y > 7.5
    corner = le.add_polygon(np.zeros((5, 5), np.int32), [(7.5, 0), (7.5, 7.5), (0, 7.5)])
    assert sorted(zip(*np.nonzero(corner.labels), strict=True)) == [(3, 4), (4, 3), (4, 4)]


@pytest.mark.parametrize(("points", "message"), [
    ([(1, 1), (4, 4)], "at least 3 points, got 2"),
    ([(1, 1), (2, 2), (3, 3)], "no area"),
    ([(1, 1), (np.nan, 2), (3, 1)], "not a number"),
    ([(1, 2, 3), (4, 5, 6), (7, 8, 9)], r"\(x, y\) points"),
    ([(20, 20), (30, 20), (30, 30)], "covers no pixel"),
    ([(1, 1), (1.2, 1), (1.2, 1.2)], "covers no pixel"),  # a sliver between pixel centres
    ([(0, 0), (3, 0), (3, 3), (0, 3)], "existing cells only"),  # exactly cell 1
])
def test_add_polygon_refuses_degenerate_polygons_with_a_clear_message(points, message):
    with pytest.raises(ValueError, match=message) as err:
        le.add_polygon(two_cells(), points)
    assert isinstance(err.value, LabelEditError)


# --- brush ----------------------------------------------------------------------------------

def test_brush_dot_is_a_disc_of_pixel_centres_within_the_radius():
    edit = le.add_brush(np.zeros((5, 5), np.int32), [(2.5, 2.5)], 1)
    expected = np.zeros((5, 5), np.int32)
    expected[2, 1:4] = 1
    expected[1:4, 2] = 1
    np.testing.assert_array_equal(edit.labels, expected)
    assert edit.description == "added cell 1 (brush, 5 px)"


def test_brush_stroke_along_a_polyline():
    # an L: right along row 1, then down column 5; radius 0.5 paints one pixel wide
    edit = le.add_brush(np.zeros((6, 7), np.int32), [(0.5, 1.5), (5.5, 1.5), (5.5, 4.5)], 0.5)
    expected = np.zeros((6, 7), np.int32)
    expected[1, 0:6] = 1
    expected[1:5, 5] = 1
    np.testing.assert_array_equal(edit.labels, expected)


def test_brush_at_the_image_edge_is_clipped():
    edit = le.add_brush(np.zeros((4, 4), np.int32), [(0, 0)], 2)  # corner: centres within 2 of (0, 0)
    expected = np.zeros((4, 4), np.int32)
    expected[0, 0:2] = 1
    expected[1, 0] = 1
    np.testing.assert_array_equal(edit.labels, expected)
    edge = le.add_brush(np.zeros((4, 4), np.int32), [(-3, 1.5), (10, 1.5)], 0.5)
    assert edge.labels.sum() == 4 and (edge.labels[1] == 1).all()
    with pytest.raises(LabelEditError, match="outside the image"):
        le.add_brush(np.zeros((4, 4), np.int32), [(-5, -5)], 1)


def test_brush_extends_an_existing_cell_over_background_only():
    labels = two_cells()
    edit = le.add_brush(labels, [(0.5, 3.5), (7.5, 3.5)], 0.5, label_id=1)  # row 3, all across
    expected = two_cells()
    expected[3, :] = 1
    np.testing.assert_array_equal(edit.labels, expected)
    assert edit.description == "extended cell 1 (brush, +8 px)"
    # row 5 crosses cell 2: only the background around it is painted
    edit = le.add_brush(labels, [(0.5, 5.5), (7.5, 5.5)], 0.5, label_id=1)
    assert (edit.labels[5] == [1, 1, 1, 2, 2, 2, 2, 1]).all()


def test_brush_refusals():
    with pytest.raises(LabelEditError, match="no background"):
        le.add_brush(two_cells(), [(1.5, 1.5)], 1)
    with pytest.raises(LabelEditError, match="radius must be positive"):
        le.add_brush(two_cells(), [(5.5, 1.5)], 0)
    with pytest.raises(LabelEditError, match="there is no cell 7"):
        le.add_brush(two_cells(), [(5.5, 1.5)], 1, label_id=7)


def test_erase_brush_removes_cell_pixels_under_the_brush():
    edit = le.erase_brush(two_cells(), [(0.5, 1.5), (7.5, 1.5), (7.5, 5.5)], 0.5)  # row 1, then column 7
    expected = two_cells()
    expected[1, 0:3] = 0
    expected[2, 0:3] = 3  # the cell fell in two: the lower piece is a cell of its own
    np.testing.assert_array_equal(edit.labels, expected)
    assert edit.description == "erased 3 px from cell 1; what was left came apart, into cell 3 as well"

    # down column 2 through cell 1, then down column 3 through cell 2
    both = le.erase_brush(two_cells(), [(2.5, 0.5), (2.5, 4.5), (3.5, 4.5), (3.5, 7.5)], 0.5)
    assert both.description == "erased 5 px from cells 1, 2"
    assert both.ids == (1, 2)

    only_2 = le.erase_brush(two_cells(), [(2.5, 0.5), (4.5, 7.5)], 1.5, label_id=2)
    assert (only_2.labels == 1).sum() == 9  # cell 1 untouched
    with pytest.raises(LabelEditError, match="no cell under the eraser"):
        le.erase_brush(two_cells(), [(6.5, 1.5)], 0.5)
    with pytest.raises(LabelEditError, match="misses cell 2"):
        le.erase_brush(two_cells(), [(1.5, 1.5)], 1, label_id=2)


# --- merge ----------------------------------------------------------------------------------

def test_merge_non_adjacent_cells_keeps_the_smallest_id():
    labels = two_cells()
    labels[7, 7] = 5
    edit = le.merge(labels, [5, 2])
    expected = labels.copy()
    expected[expected == 5] = 2
    np.testing.assert_array_equal(edit.labels, expected)
    assert edit.description == "merged cells 2, 5 into cell 2"
    assert edit.ids == (2,)
    three = le.merge(labels, (1, 2, 5))
    assert set(np.unique(three.labels)) == {0, 1} and (three.labels == 1).sum() == 9 + 8 + 1


def test_merge_refusals():
    with pytest.raises(LabelEditError, match="at least two"):
        le.merge(two_cells(), [2, 2])
    with pytest.raises(LabelEditError, match="there is no cell 4"):
        le.merge(two_cells(), [1, 4])


# --- split ----------------------------------------------------------------------------------

def test_split_a_dumbbell_across_its_bridge_keeps_every_pixel():
    labels = dumbbell()
    edit = le.split_line(labels, 3, (5.5, -1), (5.5, 8))  # vertical cut through the bridge's middle pixel
    out = edit.labels
    np.testing.assert_array_equal(out > 0, labels > 0)  # no pixel lost or added
    np.testing.assert_array_equal(out[labels == 1], 1)  # another cell untouched
    assert edit.ids == (3, 4) and edit.description == "split cell 3 into cells 3, 4"
    left, right = out[0:5, 0:4], out[0:5, 7:11]
    assert (left == 3).all() and (right == 4).all()  # equal halves: the first in scan order keeps the id
    assert out[2, 4] == 3 and out[2, 6] == 4 and out[2, 5] in (3, 4)  # the cut pixel goes to a neighbour
    for i in (3, 4):
        assert ndi.label(out == i, structure=np.ones((3, 3)))[1] == 1
    assert (out == 3).sum() + (out == 4).sum() == (labels == 3).sum() == 43


def test_split_gives_the_largest_part_the_old_id_and_new_parts_max_plus_one():
    labels = np.zeros((4, 10), np.int32)
    labels[:, 0:10] = 2
    labels[0, 0] = 7
    edit = le.split_line(labels, 2, (3.5, -1), (3.5, 5), width=1)
    out = edit.labels
    assert (out[:, 4:] == 2).all()  # right: 24 px, the larger part
    assert (out[1:, 0:3] == 8).all()  # left: the new id, max + 1
    assert out[0, 0] == 7
    np.testing.assert_array_equal(out > 0, labels > 0)


def test_a_wide_diagonal_cut_splits_and_loses_no_pixel():
    labels = np.zeros((12, 12), np.int32)
    labels[1:11, 1:11] = 1
    edit = le.split_line(labels, 1, (0, 0), (12, 12), width=3)
    assert set(np.unique(edit.labels)) == {0, 1, 2}
    assert (edit.labels > 0).sum() == 100
    assert edit.labels[1, 10] != edit.labels[10, 1]  # opposite corners end up in different parts


def test_a_one_pixel_diagonal_cut_does_not_leak_between_parts():
    labels = np.ones((6, 6), np.int32)
    edit = le.split_line(labels, 1, (0, 0), (5.5, 5.5))
    assert edit.labels[0, 5] != edit.labels[5, 0]


@pytest.mark.parametrize(("p0", "p1"), [
    ((5.5, -1), (5.5, 1.5)),  # stops above the bridge
    ((12, 0), (12, 6)),  # misses the cell
    ((2.5, 2.5), (2.5, 2.5)),  # no length
])
def test_split_refuses_a_line_that_does_not_cut(p0, p1):
    with pytest.raises(LabelEditError, match=r"does not cut cell 3 into two parts|no length"):
        le.split_line(dumbbell(), 3, p0, p1)


def test_split_of_a_merged_two_piece_cell_still_needs_a_cut():
    labels = le.merge(two_cells(), [1, 2]).labels  # cell 1 is now two separate pieces
    with pytest.raises(LabelEditError, match="does not cut cell 1"):
        le.split_line(labels, 1, (7.5, 0), (7.5, 8))


# --- relabel and the common contract ---------------------------------------------------------

def test_relabel_sequential_renumbers_in_id_order():
    labels = np.array([[0, 5, 5], [9, 0, 12]], np.int32)
    edit = le.relabel_sequential(labels)
    np.testing.assert_array_equal(edit.labels, [[0, 1, 1], [2, 0, 3]])
    assert edit.description == "renumbered cells 1..3"


OPERATIONS = {
    "delete": lambda a: le.delete(a, 1),
    "delete_at": lambda a: le.delete_at(a, 1, 1),
    "polygon": lambda a: le.add_polygon(a, [(0, 0), (8, 0), (8, 8)], overwrite=True),
    "brush": lambda a: le.add_brush(a, [(4.5, 4.5)], 2),
    "brush_extend": lambda a: le.add_brush(a, [(4.5, 4.5)], 2, label_id=1),
    "erase": lambda a: le.erase_brush(a, [(1.5, 1.5)], 1),
    "merge": lambda a: le.merge(a, [1, 2]),
    "split": lambda a: le.split_line(a, 2, (4.5, 0), (4.5, 8)),
    "relabel": lambda a: le.relabel_sequential(a),
}


@pytest.mark.parametrize("name", OPERATIONS)
@pytest.mark.parametrize("dtype", [np.int32, np.uint16])
def test_operations_return_a_new_int32_array_and_never_touch_the_input(name, dtype):
    labels = two_cells().astype(dtype)
    before = labels.copy()
    edit = OPERATIONS[name](labels)
    np.testing.assert_array_equal(labels, before)
    assert edit.labels.dtype == np.int32 and edit.labels.shape == labels.shape
    assert not np.shares_memory(edit.labels, labels)
    assert not np.array_equal(edit.labels, labels) or name == "relabel"


def test_operations_work_on_a_read_only_current_image():
    history = EditHistory(two_cells())
    assert history.apply(le.delete(history.current, 2))
    with pytest.raises(ValueError, match="read-only"):
        history.current[0, 0] = 5


def test_bad_label_images_are_refused():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        le.delete(np.zeros((2, 2, 2), np.int32), 1)
    with pytest.raises(ValueError, match="integers"):
        le.delete(np.zeros((2, 2), np.float32), 1)
    with pytest.raises(ValueError, match="positive"):
        le.delete(np.full((2, 2), -1, np.int32), 1)


# --- history --------------------------------------------------------------------------------

def test_undo_and_redo_restore_every_state_exactly():
    history = EditHistory(dumbbell())
    states = [history.current.copy()]
    steps = [
        lambda a: le.split_line(a, 3, (5.5, -1), (5.5, 8)),
        lambda a: le.add_polygon(a, [(0, 5), (13, 5), (13, 7), (0, 7)]),
        lambda a: le.merge(a, [1, 3]),
        lambda a: le.delete_at(a, 0, 8),
        lambda a: le.relabel_sequential(a),
    ]
    for step in steps:
        assert history.apply(step(history.current))
        states.append(history.current.copy())
    assert history.n_edits == 5 and history.can_undo and not history.can_redo
    assert history.descriptions == ["split cell 3 into cells 3, 4", "added cell 5 (polygon, 24 px)",
                                    "merged cells 1, 3 into cell 1", "deleted cell 4", "renumbered cells 1..2"]
    for k in range(5, 0, -1):
        last = history.descriptions[-1]
        assert history.undo() == last
        np.testing.assert_array_equal(history.current, states[k - 1])
    assert not history.can_undo and history.can_redo
    np.testing.assert_array_equal(history.current, dumbbell())
    for k in range(1, 6):
        history.redo()
        np.testing.assert_array_equal(history.current, states[k])
    assert not history.can_redo
    with pytest.raises(LabelEditError, match="nothing to redo"):
        history.redo()


def test_undo_returns_the_description_and_a_new_edit_clears_redo():
    history = EditHistory(two_cells())
    history.apply(le.delete(history.current, 1))
    history.apply(le.delete(history.current, 2))
    assert history.undo() == "deleted cell 2"
    assert history.can_redo
    history.apply(le.add_brush(history.current, [(6.5, 1.5)], 0.5))
    assert not history.can_redo and history.n_edits == 2
    assert history.descriptions == ["deleted cell 1", "added cell 3 (brush, 1 px)"]
    history.undo()
    history.undo()
    with pytest.raises(LabelEditError, match="nothing to undo"):
        history.undo()
    np.testing.assert_array_equal(history.current, two_cells())


def test_an_edit_that_changes_nothing_is_not_recorded():
    history = EditHistory(np.array([[0, 1], [2, 0]], np.int32))
    assert history.apply(le.relabel_sequential(history.current)) is False
    assert history.n_edits == 0 and not history.can_undo


def test_an_edit_of_another_shape_is_refused():
    history = EditHistory(two_cells())
    with pytest.raises(ValueError, match="the history holds"):
        history.apply(le.delete(np.ones((3, 3), np.int32), 1))


def test_history_is_bounded_and_drops_the_oldest_edit():
    history = EditHistory(np.zeros((6, 6), np.int32), max_steps=3)
    states = [history.current.copy()]
    for k in range(5):
        history.apply(le.add_brush(history.current, [(k + 0.5, 0.5)], 0.5))
        states.append(history.current.copy())
    assert history.n_edits == 3
    assert history.descriptions == ["added cell 3 (brush, 1 px)", "added cell 4 (brush, 1 px)",
                                    "added cell 5 (brush, 1 px)"]
    for _ in range(3):
        history.undo()
    assert not history.can_undo
    np.testing.assert_array_equal(history.current, states[2])  # the two oldest edits can no longer be undone
    np.testing.assert_array_equal(history.original, states[0])  # but the original is still known


def test_history_of_fifty_small_edits_on_a_large_image_stays_small():
    labels = np.zeros((2048, 2048), np.int32)
    for k in range(100):  # a grid of 20 x 20 cells
        y, x = divmod(k, 10)
        labels[100 + 180 * y : 120 + 180 * y, 100 + 180 * x : 120 + 180 * x] = k + 1
    history = EditHistory(labels)
    for k in range(50):
        edit = le.delete(history.current, k + 1) if k % 2 else le.add_brush(history.current, [(50 + 30 * k, 60)], 8)
        assert history.apply(edit)
    assert history.n_edits == 50
    full = labels.nbytes  # 16.8 MB: the current image is the only full-size array held
    assert history.nbytes < full + 1_000_000
    assert history.nbytes < 20_000_000
    for _ in range(50):
        history.undo()
    np.testing.assert_array_equal(history.current, labels)


def test_erasing_a_cell_in_two_gives_each_piece_its_own_id():
    labels = np.zeros((5, 9), np.int32)
    labels[1:4, 1:8] = 4  # a bar; erase its middle column
    edit = le.erase_brush(labels, [(4.5, 0.5), (4.5, 4.5)], 0.5)
    pieces = {int(i) for i in np.unique(edit.labels[edit.labels > 0])}
    assert pieces == {4, 5} and edit.ids == (4, 5)
    assert (edit.labels == 4).sum() == 9 and (edit.labels == 5).sum() == 9
    assert "into cell 5 as well" in edit.description
