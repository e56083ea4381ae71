"""Every CLI failure is one ``error:`` line on stderr and a non-zero exit code; the full trace
goes to the command's log file, which the line names (issue 12, point 7).

The commands run as real processes (``python -m pesflow``), so stderr is the process's
own: Prefect's console handler, warnings and thread tracebacks would show up there. Each runs
in its own session and its whole process group is killed (and checked gone) at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._campaigns import write_config

ROOT = Path(__file__).resolve().parents[2]
LOG_NAME = re.compile(r"pesflow-\d{8}T\d{6}-\d+\.log")
# a short campaign: bootstrap + validation labels (20), then one cheap training
SHORT_TRAINING = {"max_epochs": 2, "max_time_s": 20, "warm_start_epochs": 1, "patience": 2}


def _env(data: Path, prefect_home: Path, tmp: Path) -> dict[str, str]:
    """As tests/workflows/test_resume.py, without ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``
    (what a CLI run prints by default is under test) and with its own temp dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PESFLOW_"))}
    env.update(
        PESFLOW_DATA_DIR=str(data),
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        OMP_NUM_THREADS="1",
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED="false",
        TMPDIR=str(tmp),
    )
    return env


def _group_gone(pgid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _cli(
    args: list[str], env: dict[str, str], *, module: str = "pesflow", timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> <args>`` in its own session; kill its process group after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"pesflow {' '.join(args)} ran over {timeout} s:\n{err[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert _group_gone(proc.pid), f"processes of pesflow {' '.join(args)} left running"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _one_error_line(res: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line (asserting exit code, one line, ``error:``, no traceback)."""
    assert res.returncode == code, res.stderr[-3000:]
    lines = res.stderr.splitlines()
    assert len(lines) == 1, f"stderr has {len(lines)} lines:\n{res.stderr[-3000:]}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in res.stdout
    return lines[0]


def _named_log(line: str, note: str, data: Path) -> str:
    """The log file the line names (``(<note>: <path>)`` at its end), with a traceback."""
    m = re.search(rf" \({note}: (\S+)\)$", line)
    assert m, line
    path = Path(m.group(1))
    assert path.is_file() and LOG_NAME.fullmatch(path.name), path
    assert path.parent == data / "logs"
    text = path.read_text()
    assert "Traceback (most recent call last)" in text
    return text


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the module's campaign runs (its database is created once)."""
    return tmp_path_factory.mktemp("prefect")


def test_bad_config_usage_and_input_are_one_line(tmp_path: Path):
    data, tmp = tmp_path / "data", tmp_path / "tmp"
    tmp.mkdir()
    env = _env(data, tmp_path / "prefect", tmp)
    bad = write_config(tmp_path / "bad.yaml", labeler={"name": "emt", "bogus": 1})
    line = _one_error_line(_cli(["run", str(bad), "--quiet"], env), 2)
    assert line.startswith("error: bad.yaml: ") and "bogus" in line
    line = _one_error_line(_cli(["run"], env), 2)  # a usage error, outside the command
    assert "Missing argument" in line and "pesflow run --help" in line
    line = _one_error_line(_cli(["status", "nope"], env), 2)
    assert line == "error: unknown campaign 'nope'"
    # an infinite trust threshold does not validate (whatever validates must run), named
    inf = write_config(tmp_path / "inf.yaml", trust={"lo": 0.05, "hi": float("inf")})
    for cmd in ("validate", "run"):
        line = _one_error_line(_cli([cmd, str(inf)], env), 2)
        assert line == "error: inf.yaml: trust.hi: input should be a finite number (got inf)", (
            cmd,
            line,
        )
    # the API's commands too (`pesflow token ...`)
    line = _one_error_line(_cli(["token", "revoke", "nobody"], env, module="pesflow"), 2)
    assert "nobody" in line


def test_read_only_command_logs_only_on_error(tmp_path: Path):
    """`status` on a database file that is not one: one line naming the file and the problem,
    the trace in a log created for it; the log directory cannot be made, so the log is in the
    temp dir."""
    data, tmp = tmp_path / "data", tmp_path / "tmp"
    data.mkdir()
    tmp.mkdir()
    (data / "pesflow.sqlite").write_bytes(b"not a database " * 20)
    (tmp_path / "file").write_text("")
    env = {**_env(data, tmp_path / "prefect", tmp), "PESFLOW_LOG_DIR": str(tmp_path / "file/x")}
    line = _one_error_line(_cli(["status"], env), 1)
    m = re.fullmatch(
        r"error: cannot open database SQLite file \S+pesflow.sqlite \(not a database, or "
        r"corrupt\): file is not a database \(details: (\S+)\)",
        line,
    )
    assert m, line
    log = Path(m.group(1))
    assert log.parent == tmp / "pesflow-logs" and LOG_NAME.fullmatch(log.name)
    assert "Traceback (most recent call last)" in log.read_text()
    res = _cli(["validate", str(ROOT / "examples" / "cu_emt.yaml")], env)
    assert res.returncode == 0 and res.stderr == ""
    assert [p.name for p in (tmp / "pesflow-logs").iterdir()] == [log.name]  # no new log


def test_campaign_failure_in_flow_run_is_one_line(tmp_path: Path, prefect_home: Path):
    """Every label fails: the campaign stops on labeler.max_failure_rate inside the flow
    run; Prefect's "Encountered exception" and "Finished in state Failed" records, with
    tracebacks, go to the log file only."""
    data, tmp = tmp_path / "data", tmp_path / "tmp"
    tmp.mkdir()
    cfg = write_config(
        tmp_path / "failing.yaml",
        name="failing",
        labeler={
            "name": "emt",
            "retries": False,
            "max_failure_rate": 0.1,
            "faults": {"fraction": 1.0},
        },
    )
    res = _cli(["run", str(cfg), "--quiet"], _env(data, prefect_home, tmp))
    line = _one_error_line(res, 1)
    assert line.startswith("error: iteration 0: ") and "max_failure_rate 10%" in line
    text = _named_log(line, "details", data)
    assert "CampaignFailedError" in text
    # timestamps, INFO of Prefect's run loggers and the header / exit code of the command
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    pesflow ", text, re.M)
    assert "INFO    prefect.flow_runs [flow run " in text
    assert "ERROR   prefect.flow_runs" in text
    assert "pesflow run exited with code 1" in text


@pytest.mark.slow  # 17 s; test_campaign_failure_in_flow_run_is_one_line covers the path
def test_unexpected_error_in_flow_run_is_one_line(tmp_path: Path, prefect_home: Path):
    """The campaign's models directory is a file: saving the first committee raises
    FileExistsError inside the training task; the line names the type and the log."""
    data, tmp = tmp_path / "data", tmp_path / "tmp"
    tmp.mkdir()
    cfg = write_config(tmp_path / "crash.yaml", name="crash", training=SHORT_TRAINING)
    (data / "campaigns" / "crash").mkdir(parents=True)
    (data / "campaigns" / "crash" / "models").write_text("not a directory")
    res = _cli(["run", str(cfg), "--quiet"], _env(data, prefect_home, tmp))
    line = _one_error_line(res, 1)
    assert re.match(r"error: FileExistsError: .*models'? \(full trace: ", line), line
    text = _named_log(line, "full trace", data)
    assert "FileExistsError" in text and "train-committee" in text


def test_in_process_command_logs_and_restores_the_root_logger(tmp_path: Path):
    """Through typer's CliRunner (as the other CLI tests run): an exit-2 error is the message
    alone, the command that always logs wrote its header, error and exit code, and the root
    logger is as before (no handler left behind, same level)."""
    from typer.testing import CliRunner

    from pesflow.cli import app

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    data = tmp_path / "data"
    args = ["export", "nope", "--data-dir", str(data), "-o", str(tmp_path / "out")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and res.output.strip() == "error: unknown campaign 'nope'"
    assert (list(root.handlers), root.level) == before
    [log] = (data / "logs").iterdir()
    assert LOG_NAME.fullmatch(log.name)
    text = log.read_text()
    assert "pesflow export (campaign='nope'" in text
    assert "pesflow export failed: unknown campaign 'nope'" in text
    assert "exited with code 2" in text and "Traceback" not in text


def test_one_line_and_log_file_path(tmp_path: Path):
    from datetime import UTC, datetime

    from workflows.logs import log_file_path, one_line

    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line("x" * 50, limit=10) == "x" * 9 + "…"
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    path = log_file_path(tmp_path / "logs", now=when, pid=42)
    assert path == tmp_path / "logs" / "pesflow-20260102T030405-42.log"
    assert not (tmp_path / "logs").exists()  # created with the first record only
