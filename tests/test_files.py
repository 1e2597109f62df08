"""The one writer of files a user keeps (recorded scenarios, fuzz findings): whole
or not at all, never over a file without force, never through a symlink."""

import os

import pytest

from tpsharness.files import MAX_NAMES, write_file


def test_a_taken_name_is_passed_over_for_the_next_numbered_one(tmp_path):
    (tmp_path / "test_x.tps.json").write_text("curated")
    assert write_file(tmp_path, "test_x.tps.json", "new") == tmp_path / "test_x_2.tps.json"
    assert write_file(tmp_path, "test_x.tps.json", "newer") == tmp_path / "test_x_3.tps.json"
    assert (tmp_path / "test_x.tps.json").read_text() == "curated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_x.tps.json", "test_x_2.tps.json",
                                                         "test_x_3.tps.json"]   # no temporary left


def test_a_symlink_in_the_way_is_never_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "test_x.tps.json").symlink_to(outside)
    assert write_file(folder, "test_x.tps.json", "new").name == "test_x_2.tps.json"
    assert write_file(folder, "test_x.tps.json", "forced", force=True) == folder / "test_x.tps.json"
    assert outside.read_text() == "precious"
    assert not (folder / "test_x.tps.json").is_symlink() and (folder / "test_x.tps.json").read_text() == "forced"


def test_without_numbering_a_taken_name_is_refused_and_force_replaces_it(tmp_path):
    (tmp_path / "t.json").write_text("old")
    with pytest.raises(FileExistsError):
        write_file(tmp_path, "t.json", "new", numbered=False)
    assert (tmp_path / "t.json").read_text() == "old"
    write_file(tmp_path, "t.json", "new", numbered=False, force=True)
    assert (tmp_path / "t.json").read_text() == "new"
    assert os.listdir(tmp_path) == ["t.json"]


def test_when_every_name_is_taken_it_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("tpsharness.files.MAX_NAMES", 3)
    for name in ("a.json", "a_2.json", "a_3.json"):
        (tmp_path / name).write_text("x")
    with pytest.raises(FileExistsError, match="a.json and 2 other names like it exist"):
        write_file(tmp_path, "a.json", "new")
    assert len(os.listdir(tmp_path)) == 3 and MAX_NAMES == 1000
