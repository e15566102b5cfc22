"""core/text.py: counts and time spans in messages."""

from core.text import duration, plural


def test_plural_and_irregular_words():
    assert plural(1, "image") == "1 image" and plural(2, "image") == "2 images" and plural(3, "batch") == "3 batches"


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (5, 89, 120, 89 * 60, 2 * 3600, 47 * 3600, 163 * 86400)] == [
        "5 s", "89 s", "2 min", "89 min", "2.0 h", "47.0 h", "163 days"]
