"""Shared fixtures: an isolated MINIGPT_HOME for every test, and the ../shared/data folder when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("MINIGPT_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("minigpt_home")
    monkeypatch.setenv("MINIGPT_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path_factory, monkeypatch):
    """Commands write data/ and checkpoints/ relative to the working folder: keep them out of the repo."""
    work = tmp_path_factory.mktemp("work")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real open datasets); tests that need it skip cleanly in a user's checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def one_thread():
    """For modules of tiny models (`pytestmark = pytest.mark.usefixtures("one_thread")`): one torch thread is as
    fast as two, and never stalls in OpenMP barriers on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
