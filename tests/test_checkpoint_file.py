"""models/checkpoint_file.py: our checkpoints are plain data, written atomically, read safely."""

from __future__ import annotations

import json
import os

import pytest
import torch

from models.checkpoint_file import (
    check_format,
    cpu_state,
    load_weights,
    metadata_path,
    read_checkpoint,
    read_plain,
    write_checkpoint,
)

WHAT, HINT = "CellScope test checkpoint", "make one with the test"


class Evil:
    def __reduce__(self):
        return os.system, ("echo should never run",)


def test_metadata_sits_beside_the_checkpoint():
    assert metadata_path("w/cells.unet.pt").as_posix() == "w/cells.unet.json"
    assert metadata_path("w/cells.pt").name == "cells.json"
    assert metadata_path("w/cells").name == "cells.json"


def test_round_trip_writes_atomically_and_keeps_the_json(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "sub" / "m.test.pt"
    data = {"format": "t", "version": 2, "state_dict": cpu_state(net.state_dict())}
    assert write_checkpoint(path, data, {"format": "t", "f1": 0.5}) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.test.json", "m.test.pt"]  # no .part left
    assert json.loads(metadata_path(path).read_text()) == {"format": "t", "f1": 0.5}
    back = read_checkpoint(path, fmt="t", version=2, what=WHAT, hint=HINT)
    other = load_weights(torch.nn.Linear(3, 2), back["state_dict"], path, "cpu", "a 3-to-2 layer")
    assert not other.training and torch.equal(other.weight, net.weight)
    with pytest.raises(ValueError, match=r"m.test.pt: weights do not fit a 4-to-2 layer"):
        load_weights(torch.nn.Linear(4, 2), back["state_dict"], path, "cpu", "a 4-to-2 layer")


def test_wrong_files_are_refused_with_the_file_named(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(ValueError, match=f"junk.pt is not a {WHAT}: it cannot be read as plain weights"):
        read_plain(tmp_path / "junk.pt", WHAT)
    torch.save({"x": Evil()}, tmp_path / "code.pt")  # a pickle of code is never run
    with pytest.raises(ValueError, match=f"code.pt is not a {WHAT}"):
        read_plain(tmp_path / "code.pt", WHAT)
    with pytest.raises(ValueError, match=f"missing.pt is not a {WHAT}"):
        read_plain(tmp_path / "missing.pt", WHAT)
    with pytest.raises(ValueError, match=rf"o.pt is not a {WHAT} \(expected format 't'; {HINT}\)"):
        check_format({"format": "other"}, tmp_path / "o.pt", fmt="t", version=1, what=WHAT, hint=HINT)
    with pytest.raises(ValueError, match=f"n.pt is a {WHAT} of version 9; this CellScope reads version 1"):
        check_format({"format": "t", "version": 9}, tmp_path / "n.pt", fmt="t", version=1, what=WHAT, hint=HINT)
