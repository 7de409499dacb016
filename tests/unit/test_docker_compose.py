"""docker-compose.yml cannot run here (no Docker engine); check its production shape instead."""

from __future__ import annotations

from pathlib import Path

import yaml

from delegation.core.search_attributes import ALL_KEYS
from delegation.core.settings import Settings

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_services_of_the_production_shape() -> None:
    assert {"postgresql", "temporal", "temporal-ui", "worker", "llm"} <= set(SERVICES)
    assert SERVICES["temporal"]["environment"]["DB"] == "postgres12"
    assert SERVICES["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"
    assert "postgresql" in SERVICES["temporal"]["depends_on"]
    assert SERVICES["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_worker_variables_are_settings_the_service_reads() -> None:
    env = SERVICES["worker"]["environment"]
    required = {
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "LLM_BASE_URL",
        "LLM_API_KEY",
        "LLM_MODEL",
        "LLM_TIMEOUT_S",
        "USE_DSPY_DELEGATION",
        "DSPY_ROLLOUT_PERCENTAGE",
        "LOG_DELEGATION_DECISIONS",
    }
    assert required <= set(env)
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["LLM_BASE_URL"].endswith("http://llm:8080/v1}")
    known = {field.alias for field in Settings.model_fields.values()} | {
        "USE_DSPY_DELEGATION",
        "DSPY_ROLLOUT_PERCENTAGE",
        "LOG_DELEGATION_DECISIONS",
    }
    assert set(env) <= known, f"variables nothing reads: {set(env) - known}"
    assert SERVICES["worker"]["command"] == ["python", "-m", "delegation.worker"]


def test_published_ports_bind_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_search_attributes_registered() -> None:
    command = " ".join(SERVICES["temporal-setup"]["command"])
    for key in ALL_KEYS:
        assert f"--name {key.name}" in command


def test_no_secret_values_committed() -> None:
    postgres = SERVICES["postgresql"]["environment"]["POSTGRES_PASSWORD"]
    assert postgres.startswith("${"), "passwords come from the environment"
    assert SERVICES["worker"]["environment"]["LLM_API_KEY"].startswith("${")


def test_workers_share_the_app_database_beside_temporals() -> None:
    worker = SERVICES["worker"]
    url = worker["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql://temporal:${POSTGRES_PASSWORD") and url.endswith("@postgresql:5432/delegation")
    assert worker["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert "container_name" not in worker and "ports" not in worker, "replicas need neither a fixed name nor a port"
    (init,) = [v for v in SERVICES["postgresql"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    script = Path(__file__).resolve().parents[2] / init.split(":")[0]
    assert "CREATE DATABASE delegation" in script.read_text()


def test_the_llm_service_requires_the_key_the_workers_send() -> None:
    """Defect 12: on the compose network the llm service is reachable by every container."""
    command = COMPOSE["services"]["llm"]["command"]
    key = command[command.index("--api-key") + 1]
    assert key.startswith("${LLM_API_KEY:?")
    assert COMPOSE["services"]["worker"]["environment"]["LLM_API_KEY"] == key


def test_workers_and_the_codec_server_share_the_required_payload_keys_and_the_ui_uses_it() -> None:
    worker, codec = SERVICES["worker"]["environment"], SERVICES["codec-server"]["environment"]
    assert worker["PAYLOAD_ENCRYPTION_KEYS"].startswith("${PAYLOAD_ENCRYPTION_KEYS:?")
    assert codec["PAYLOAD_ENCRYPTION_KEYS"] == worker["PAYLOAD_ENCRYPTION_KEYS"]
    assert codec["PAYLOAD_ENCRYPTION_KEY_ID"] == worker["PAYLOAD_ENCRYPTION_KEY_ID"]
    known = {field.alias for field in Settings.model_fields.values()}
    assert set(codec) <= known, f"variables nothing reads: {set(codec) - known}"
    assert SERVICES["codec-server"]["command"] == ["python", "-m", "delegation.devstack.codec_server"]
    published = SERVICES["codec-server"]["ports"][0].split(":")
    # The browser calls the codec server at the UI's side of the port mapping, from the UI's origin.
    assert SERVICES["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"] == f"http://localhost:{published[1]}"
    ui_port = SERVICES["temporal-ui"]["ports"][0].split(":")[1]
    assert codec["TEMPORAL_UI_PORT"] == ui_port
