"""docker-compose.yml, the Dockerfile and scripts/stack agree: the compose file parses, every
pesflow service's command is a real command of the `pesflow` CLI (its options parse too), the
Prefect version is the same everywhere, and the environment variable names the services get
are exactly those scripts/stack exports."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parents[2]
PESFLOW_SERVICES = ("pesflow-migrate", "pesflow-api", "pesflow-worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _stack_env_names() -> set[str]:
    text = (ROOT / "scripts" / "stack").read_text()
    block = text.split("# >>> service environment", 1)[1].split("# <<< service environment")[0]
    names = set(re.findall(r"^export ([A-Z_][A-Z0-9_]*)=", block, flags=re.M))
    assert names, "no exports found in scripts/stack's service environment block"
    return names


def _stack_services() -> list[str]:
    m = re.search(r"^SERVICES=\(([^)]*)\)", (ROOT / "scripts" / "stack").read_text(), re.M)
    assert m
    return m.group(1).split()


def _entrypoint() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, flags=re.M)
    assert m, "Dockerfile has no exec-form ENTRYPOINT"
    return yaml.safe_load(m.group(1))


def _resolve(args: list[str]) -> str:
    """The command path that `pesflow ARGS` runs; its options must parse (no execution)."""
    from pesflow.cli import app

    cmd = typer.main.get_command(app)  # typer's (vendored) click: duck-typed below
    rest, path = list(args), []
    while hasattr(cmd, "commands"):  # a group
        name = rest.pop(0)
        path.append(name)
        sub = cmd.commands.get(name)
        assert sub is not None, f"`pesflow {' '.join(args)}`: no command {name!r}"
        cmd = sub
    ctx = cmd.make_context("pesflow", rest, resilient_parsing=False)  # raises on bad options
    assert ctx is not None
    return " ".join(path)


def test_compose_parses_with_the_four_services(compose: dict) -> None:
    services = compose["services"]
    assert {"postgres", "prefect-server", "pesflow-api", "pesflow-worker"} <= set(services)
    assert set(services) - {"postgres", "prefect-server"} == set(PESFLOW_SERVICES)
    assert set(compose["volumes"]) >= {"pgdata", "pesflow-data"}
    # the stack starts the same long-running services (PostgreSQL is already running there)
    assert _stack_services() == ["prefect-server", "pesflow-api", "pesflow-worker"]


def test_every_command_is_a_real_cli_command(compose: dict) -> None:
    assert _entrypoint() == ["python", "-m", "pesflow"]  # the pesflow CLI with serve/token
    seen = {}
    for name in PESFLOW_SERVICES:
        svc = compose["services"][name]
        command = svc["command"]
        args = command if isinstance(command, list) else shlex.split(command)
        seen[name] = _resolve(args)
    assert seen == {
        "pesflow-migrate": "db upgrade",
        "pesflow-api": "serve",
        "pesflow-worker": "worker",
    }
    prefect_cmd = compose["services"]["prefect-server"]["command"]
    assert prefect_cmd[:3] == ["prefect", "server", "start"]


def test_same_prefect_version_everywhere(compose: dict) -> None:
    import prefect

    pin = re.search(r"^prefect==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert pin and pin.group(1) == prefect.__version__ == "3.8.8"
    image = compose["services"]["prefect-server"]["image"]
    assert image.startswith(f"prefecthq/prefect:{pin.group(1)}-")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile  # the pesflow image installs the same pin
    assert "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M), "image must not run as root"


def test_environment_matches_scripts_stack(compose: dict) -> None:
    stack = _stack_env_names()
    for name in ("prefect-server", *PESFLOW_SERVICES):
        env = compose["services"][name]["environment"]
        assert set(env) == stack, (name, sorted(set(env) ^ stack))
    env = compose["services"]["pesflow-api"]["environment"]
    assert env["PESFLOW_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def test_health_checks_secrets_and_order(compose: dict) -> None:
    services = compose["services"]
    for name in ("postgres", "prefect-server", "pesflow-api", "pesflow-worker"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert "/api/v1/health" in " ".join(services["pesflow-api"]["healthcheck"]["test"])
    assert "--healthcheck" in services["pesflow-worker"]["command"]
    assert services["postgres"]["env_file"] == ".env"
    example = (ROOT / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=" in example
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text  # no secret in the compose file itself
    for name in ("pesflow-api", "pesflow-worker"):
        deps = services[name]["depends_on"]
        assert deps["pesflow-migrate"]["condition"] == "service_completed_successfully"
        assert deps["prefect-server"]["condition"] == "service_healthy"
