"""The caller's directory: relative paths resolve where the user ran the command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from churn.invocation.workdir import (
    WORKING_DIRECTORY_ENV,
    enter_invocation_directory,
    from_invocation,
    invocation_directory,
)


@pytest.fixture(autouse=True)
def keep_cwd():
    before = os.getcwd()
    yield
    os.chdir(before)


def test_without_bazel_run_the_current_directory_is_the_callers(tmp_path, monkeypatch):
    monkeypatch.delenv(WORKING_DIRECTORY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert invocation_directory() == tmp_path
    assert from_invocation("var") == tmp_path / "var"


def test_enter_changes_into_the_callers_directory(tmp_path, monkeypatch):
    caller = tmp_path / "where the user was"
    caller.mkdir()
    monkeypatch.setenv(WORKING_DIRECTORY_ENV, str(caller))
    assert enter_invocation_directory() == caller
    assert Path.cwd() == caller.resolve()
    assert Path("var").resolve() == (caller / "var").resolve()


def test_from_invocation_keeps_absolute_paths_and_the_cwd(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKING_DIRECTORY_ENV, str(tmp_path))
    cwd = os.getcwd()
    assert from_invocation("out/churn.yaml") == tmp_path / "out" / "churn.yaml"
    assert from_invocation("/srv/x.yaml") == Path("/srv/x.yaml")
    assert os.getcwd() == cwd  # tools reading runfiles by relative path stay where they are


def test_a_missing_directory_is_a_clear_error(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    monkeypatch.setenv(WORKING_DIRECTORY_ENV, str(gone))
    with pytest.raises(SystemExit, match=f"cannot enter the directory the command was run in \\({gone}"):
        enter_invocation_directory()
