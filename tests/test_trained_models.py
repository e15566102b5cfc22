"""Models trained here (models/trained_models.py, components/trained_models.py, ``models delete``):
listed with their owner, date and F1; deleted from the Train page after an "I am sure" or from the
command line; never while a training writes one; with sign-in on, only by their owner; a training
done while signed in records its owner. Weights placed by hand (``user:<name>``) are not theirs to
delete."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from streamlit.testing.v1 import AppTest

import components.trained_models as panel
from models.registry import list_models
from models.trained_models import delete_trained_model, record_owner, trained_model, trained_models
from workflows.cli.parser import main

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s3cret", "client_id": "c",
        "client_secret": "x", "server_metadata_url": "https://id.example.org/.well-known/openid-configuration"}
ANN = {"is_logged_in": True, "email": "ann@lab.org"}
BOB = {"is_logged_in": True, "email": "bob@lab.org"}


@pytest.fixture
def weights(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("CELLSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("CELLSCOPE_SIGN_IN", raising=False)
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    return folder


def fake_checkpoint(folder, filename: str, *, date: str, f1: float, owner: str | None = None, record: bool = True):
    """A checkpoint file as the weights folder holds it, with the training record beside it (never loaded here)."""
    path = folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights" * 100)
    if record:
        meta = {"format": "test", "date": date, "validation": {"f1": f1}, **({"owner": owner} if owner else {})}
        path.with_name(path.name.removesuffix(".pt") + ".json").write_text(json.dumps(meta))
    return path


@pytest.fixture
def models(weights):
    """Two U-Nets and a YOLO trained here (one owned by Ann), and a YOLO file placed by hand."""
    return {"old": fake_checkpoint(weights, "old.unet.pt", date="2026-12-01T10:00:00+00:00", f1=0.61),
            "anns": fake_checkpoint(weights, "anns.unet.pt", date="2026-12-07T09:00:00+00:00", f1=0.83,
                                    owner="ann@lab.org"),
            "yolo": fake_checkpoint(weights, "yolo/seg.pt", date="2026-12-05T09:00:00+00:00", f1=0.7),
            "placed": fake_checkpoint(weights, "yolo/placed.pt", date="", f1=0, record=False)}


def _names() -> set[str]:
    return {info.name for info in list_models()}


# ---- plain: list, owner, delete ------------------------------------------------------------------------------------

def test_trained_models_are_listed_newest_first_with_owner_date_and_f1_and_placed_files_left_out(models):
    listed = trained_models()
    assert [m.name for m in listed] == ["trained:unet:anns", "trained:yolo:seg", "trained:unet:old"]
    anns = listed[0]
    assert (anns.family, anns.owner, anns.f1, anns.created, anns.size_bytes) == (
        "unet", "ann@lab.org", 0.83, "2026-12-07T09:00:00+00:00", 700)
    assert listed[2].owner is None and "user:placed" in _names()


def test_deleting_removes_the_checkpoint_and_its_record_and_the_registry_forgets_it(models):
    gone = delete_trained_model("trained:unet:old")
    assert gone.checkpoint == models["old"] and not models["old"].exists()
    assert not models["old"].with_name("old.unet.json").exists()
    assert "trained:unet:old" not in _names() and "trained:unet:anns" in _names()
    delete_trained_model("trained:yolo:seg")
    assert not models["yolo"].exists() and models["placed"].exists() and "user:placed" in _names()


def test_deleting_refuses_a_model_being_trained_an_unknown_name_and_a_placed_file(models):
    with pytest.raises(ValueError, match="being trained now"):
        delete_trained_model("trained:unet:old", busy={"trained:unet:old"})
    assert models["old"].exists()
    with pytest.raises(ValueError, match=r"no model trained here is named 'trained:unet:nope'.*trained:unet:anns"):
        delete_trained_model("trained:unet:nope")
    with pytest.raises(ValueError, match="no model trained here"):
        delete_trained_model("user:placed")
    assert models["placed"].exists()


def test_record_owner_writes_the_owner_beside_the_checkpoint(models):
    assert record_owner("unet", "old", "carol@lab.org")
    assert trained_model("trained:unet:old").owner == "carol@lab.org"
    assert json.loads(models["old"].with_name("old.unet.json").read_text())["validation"] == {"f1": 0.61}
    assert not record_owner("unet", "missing", "carol@lab.org")
    assert not record_owner("unet", "a/b", "carol@lab.org")  # a name no file can have: no error


def test_the_command_line_deletes_a_trained_model_and_refuses_an_unknown_one(models, capsys):
    assert main(["models", "delete", "trained:unet:anns"]) == 0
    assert "deleted model trained:unet:anns" in capsys.readouterr().out and not models["anns"].exists()
    assert main(["models", "delete", "trained:unet:anns"]) == 1
    assert "no model trained here is named 'trained:unet:anns'" in capsys.readouterr().err
    assert main(["models"]) == 0 and "trained:unet:old" in capsys.readouterr().out  # models alone still lists


# ---- the Train page ------------------------------------------------------------------------------------------------

def train_page(*, secrets: dict | None = None, user: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    if secrets is not None:
        at.secrets = secrets
    if user is not None:
        at.user = user
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest):
    return next(d.value for d in at.dataframe if list(d.value.columns)[:4] == ["name", "model", "trained", "owner"])


def test_the_train_page_lists_the_models_and_deletes_one_only_after_i_am_sure(models):
    from components.model_panel import result_store

    store = result_store()
    store.get_or_compute(("img", "trained:unet:old", "{}", (0, 0), "cpu"), lambda: "old result")
    store.get_or_compute(("img", "trained:unet:anns", "{}", (0, 0), "cpu"), lambda: "anns result")
    at = train_page()
    table = _table(at)
    assert list(table["name"]) == ["trained:unet:anns", "trained:yolo:seg", "trained:unet:old"]
    assert list(table["owner"]) == ["ann@lab.org", "", ""] and list(table["model"])[0] == "U-Net"
    at.selectbox(key="tr.del.model").set_value("trained:unet:old").run()
    assert at.button(key="tr.del.go").disabled and any("shared by everyone" in w.value for w in at.warning)
    at.checkbox(key="tr.del.sure").check().run()
    at.button(key="tr.del.go").click().run()
    assert not at.exception, at.exception
    assert not models["old"].exists() and "Deleted the model “trained:unet:old”." in [s.value for s in at.success]
    assert list(_table(at)["name"]) == ["trained:unet:anns", "trained:yolo:seg"]
    assert at.selectbox(key="tr.del.model").value is None
    # the server forgets the deleted model's results (one trained again under its name is not served them)
    assert store.get(("img", "trained:unet:old", "{}", (0, 0), "cpu")) is None
    assert store.get(("img", "trained:unet:anns", "{}", (0, 0), "cpu")) == "anns result"


def test_a_model_being_trained_is_not_offered_for_deletion(models, monkeypatch):
    monkeypatch.setattr(panel, "busy_models", lambda: {"trained:unet:old"})
    at = train_page()
    at.selectbox(key="tr.del.model").set_value("trained:unet:old").run()
    assert any("is being trained now" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "tr.del.go"] and models["old"].exists()


def test_with_sign_in_on_only_the_owner_deletes_a_model(models):
    bob = train_page(secrets={"auth": AUTH}, user=BOB)
    bob.selectbox(key="tr.del.model").set_value("trained:unet:anns").run()
    assert any("Only its owner, ann@lab.org, may delete this model" in i.value for i in bob.info)
    assert not [b for b in bob.button if b.key == "tr.del.go"]
    bob.selectbox(key="tr.del.model").set_value("trained:unet:old").run()
    assert any("python -m core models delete trained:unet:old" in i.value for i in bob.info)
    assert not [b for b in bob.button if b.key == "tr.del.go"]
    ann = train_page(secrets={"auth": AUTH}, user=ANN)
    ann.selectbox(key="tr.del.model").set_value("trained:unet:anns").run()
    ann.checkbox(key="tr.del.sure").check().run()
    ann.button(key="tr.del.go").click().run()
    assert not ann.exception and not models["anns"].exists() and models["old"].exists()


def test_a_model_trained_while_signed_in_records_its_owner(weights, monkeypatch):
    import components.training_state as jobs
    from components.training_state import training_queue

    real = jobs.train_segmenter  # the owner is the point, not the model: 2 steps, not 25 (15 s of CI)
    monkeypatch.setattr(jobs, "train_segmenter", lambda family, images, *, settings, **kw:
                        real(family, images, settings={**settings, "steps_per_epoch": 2}, **kw))

    at = train_page(secrets={"auth": AUTH}, user=ANN)
    at.text_input(key="tr.name").set_value("owned").run()
    at.number_input(key="tr.fam.unet.epochs").set_value(1).run()
    at.button(key="tr.start").click().run()
    assert not at.exception, at.exception
    (job,) = [j for j in training_queue().jobs(at.session_state["workspace_id"]) if j.name == "owned"]
    done = training_queue().wait(job.id, timeout=240)
    assert done is not None and done.state == "done", (done.state, done.error)
    assert trained_model("trained:unet:owned").owner == "ann@lab.org"
    at.run()
    assert dict(zip(_table(at)["name"], _table(at)["owner"], strict=True))["trained:unet:owned"] == "ann@lab.org"
