"""`python -m animax.data.build`: a report at the end, and never a half dataset."""

import hashlib
import json

import pytest
from test_data_fixtures import write_animal3d

from animax.data import Animal3d
from animax.data.build import build, main


def tree_digest(folder):
    """{relative path: sha1} of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def built(tmp_path):
    """An animal3d source folder and a first successful build of it."""
    source, data_dir = tmp_path / "src", tmp_path / "data"
    write_animal3d(source)
    assert main(["animal3d", "--manual_dir", str(source), "--data_dir", str(data_dir), "--no_progress"]) == 0
    return source, data_dir


def test_report_lists_every_skipped_file_with_its_reason(tmp_path, capsys):
    source, data_dir = tmp_path / "src", tmp_path / "data"
    write_animal3d(source)
    assert main(["animal3d", "--manual_dir", str(source), "--data_dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"written to {data_dir / 'animal3d' / '1.1.0'}" in out
    assert "train: 5 examples" in out and "test: 2 examples" in out and "skipped: 5" in out
    for reason, file in [("missing file", "images/0008.jpg"), ("unreadable image", "images/0009.jpg"),
                         ("no visible keypoint", "images/0005.jpg"), ("NaN or infinite value", "images/0006.jpg"),
                         ("box outside the image", "images/0007.jpg")]:
        assert f"1 x {reason}" in out and file in out
    report = json.loads((data_dir / "animal3d/1.1.0/build_report.json").read_text())
    assert len(report["skipped"]) == 5 and report["examples"] == {"train": 5, "test": 2}


def test_failed_build_leaves_the_previous_version(built, capsys):
    source, data_dir = built
    before = tree_digest(data_dir)
    for image in (source / "images").iterdir():
        image.unlink()                                 # every record now points to a missing file
    assert main(["animal3d", "--manual_dir", str(source), "--data_dir", str(data_dir), "--no_progress"]) == 1
    assert "error: animal3d not built" in capsys.readouterr().err
    assert tree_digest(data_dir) == before             # no staging folder left either
    assert main(["animal3d", "--manual_dir", str(source / "nowhere"), "--data_dir", str(data_dir)]) == 1
    assert tree_digest(data_dir) == before


def test_interrupted_build_leaves_the_previous_version(built, monkeypatch):
    source, data_dir = built
    before = tree_digest(data_dir)
    calls = []

    def interrupted(self, record):
        calls.append(record)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, record)

    original = Animal3d._example
    monkeypatch.setattr(Animal3d, "_example", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build("animal3d", source, data_dir, progress=False)
    assert tree_digest(data_dir) == before


def test_rebuild_replaces_the_previous_version(built):
    source, data_dir = built
    train = json.loads((source / "train.json").read_text())
    train["data"] = train["data"][:2]
    (source / "train.json").write_text(json.dumps(train))
    report = build("animal3d", source, data_dir, progress=False)
    assert report["examples"] == {"train": 2, "test": 2}
    assert sorted(p.name for p in data_dir.iterdir()) == ["animal3d"]
    assert sorted(p.name for p in (data_dir / "animal3d").iterdir()) == ["1.1.0"]


def test_options_that_do_not_apply_are_refused(built, capsys):
    source, data_dir = built
    assert main(["animal3d", "--manual_dir", str(source), "--data_dir", str(data_dir), "--num_train", "3"]) == 1
    assert "--num_train does not apply to animal3d" in capsys.readouterr().err
