"""fastnn experiments holds its --out folder like fastnn train: one process per folder."""

import os
import socket

import click
from click.testing import CliRunner

from fastnn.rundir import LOCK_NAME, RunLock
from fastnn_cli.main import cli


def test_experiments_in_a_held_folder_is_refused_before_loading_data_and_the_lock_ends_with_it(tmp_path, monkeypatch):
    import fastnn_cli.experiments as experiments_module

    args = ["experiments", "--device", "cpu", "--quick", "--out", str(tmp_path)]
    with RunLock(tmp_path):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: {tmp_path} is in use by another run (pid {os.getpid()} on {socket.gethostname()}); "
    )
    assert result.output.count("\n") == 1

    def held_while_loading(*args):
        assert (tmp_path / LOCK_NAME).is_file()
        raise click.ClickException("no data here")

    monkeypatch.setattr(experiments_module, "load_split", held_while_loading)
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.output.endswith("Error: no data here\n") and result.exit_code == 1
    assert not (tmp_path / LOCK_NAME).exists()  # let go when the command ended

