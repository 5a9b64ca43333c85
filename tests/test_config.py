"""Settings: a TOML file, KERNOS_* variables over it, secrets masked when printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernos import ConfigError, load_settings
from kernos.kernel.config import mask_dsn
from kernos.kernel.temporal_credentials import presented

TOML = """
default_model = "gemma"

[temporal]
address = "temporal.internal:7233"

[database]
dsn = "postgresql://kernos:s3cret@db/kernos"

[[llm]]
name = "local"
model = "gemma"
base_url = "http://127.0.0.1:8080"
api_key = "sk-abc"
slots = 8
"""


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kernos.toml"
    path.write_text(TOML)
    monkeypatch.setenv("KERNOS_TEMPORAL__NAMESPACE", "prod")
    monkeypatch.setenv("KERNOS_TEMPORAL__ADDRESS", "other:7233")
    settings = load_settings(path)
    assert settings.temporal.address == "other:7233"
    assert settings.temporal.namespace == "prod"
    assert settings.llm[0].slots == 8
    assert settings.model_for(None) == "gemma"
    assert settings.models() == ["gemma"]


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text(TOML)
    monkeypatch.setenv("KERNOS_CONFIG", str(path))
    assert load_settings().temporal.address == "temporal.internal:7233"


def test_secrets_are_masked(tmp_path: Path) -> None:
    path = tmp_path / "kernos.toml"
    path.write_text(TOML)
    masked = load_settings(path).masked()
    text = repr(masked)
    assert "s3cret" not in text
    assert "sk-abc" not in text
    assert masked["database"]["dsn"] == "postgresql://kernos:********@db/kernos"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:pw@h:5432/d", "postgresql://u:********@h:5432/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("host=h user=u password=pw dbname=d", "user=u password=******** dbname=d host=h"),
        # libpq's other spellings of a key=value password.
        ("host=h password = pw dbname=d", "password=******** dbname=d host=h"),
        ("host=h password='a b c' user=u", "user=u password=******** host=h"),
        # A client key's passphrase too; the certificates' paths are no secret.
        (
            "postgresql://u:pw@h/d?sslmode=verify-full&sslkey=/k.key&sslpassword=pp",
            "postgresql://u:********@h/d?sslmode=verify-full&sslkey=/k.key&sslpassword=********",
        ),
        ("host=h sslcert=/c.pem sslpassword=pp", "host=h sslcert=/c.pem sslpassword=********"),
        ("host=h password='unclosed", "******** (a DSN libpq cannot read)"),
    ],
)
def test_mask_dsn(dsn: str, shown: str) -> None:
    assert mask_dsn(dsn) == shown


TEMPORAL_TLS = """
[temporal]
address = "temporal.example.com:7233"
server_ca_file = "/etc/kernos/temporal-ca.pem"
client_cert_file = "/etc/kernos/kernos.pem"
client_key_file = "/etc/kernos/kernos.key"
api_key = "tc-shared-key"

[temporal.agent_worker]
client_cert_file = "/etc/kernos/agents.pem"
client_key_file = "/etc/kernos/agents.key"

[temporal.gateway]
api_key = "tc-gateway-key"

[temporal.kernel_worker]
client_cert_file = "/etc/kernos/kernel.pem"
client_key_file = "/etc/kernos/kernel.key"
"""


def test_each_kind_of_process_connects_to_temporal_with_its_own_credentials(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kernos.toml"
    path.write_text(TEMPORAL_TLS)
    settings = load_settings(path)
    agents = presented(settings.temporal, "agent_worker")
    assert agents.tls
    assert agents.credentials.client_cert_file == Path("/etc/kernos/agents.pem")
    # Who it is comes whole from its own section: its certificate, no shared API key besides.
    assert agents.credentials.api_key is None
    assert agents.setting("client_key_file") == "[temporal.agent_worker] client_key_file"
    assert agents.setting("server_ca_file") == "[temporal] server_ca_file"
    kernel = presented(settings.temporal, "kernel_worker")
    assert kernel.credentials.client_cert_file == Path("/etc/kernos/kernel.pem")
    shared = presented(settings.temporal, "client")
    assert shared.credentials.client_cert_file == Path("/etc/kernos/kernos.pem")
    assert shared.setting("client_cert_file") == "[temporal] client_cert_file"
    # An API key and its file go together: the gateway's key replaces the shared one.
    gateway = presented(settings.temporal, "gateway")
    assert gateway.credentials.api_key is not None
    assert gateway.credentials.api_key.get_secret_value() == "tc-gateway-key"
    # Printed, every API key is masked; the files' paths are shown.
    text = repr(settings.masked())
    assert "tc-shared-key" not in text and "tc-gateway-key" not in text
    assert settings.masked()["temporal"]["agent_worker"]["client_key_file"] == (
        "/etc/kernos/agents.key"
    )
    # An agent worker runs untrusted code: it connects with `[temporal]`'s and its own; of the
    # others it keeps the files' paths (its pools' view masks them), never an API key.
    untrusted = load_settings(path, credentials=False).temporal
    assert untrusted.agent_worker is not None
    assert untrusted.client is None
    assert untrusted.gateway is not None and untrusted.gateway.api_key is None
    assert untrusted.kernel_worker is not None
    assert untrusted.kernel_worker.client_key_file == Path("/etc/kernos/kernel.key")
    # The embedded dev server: no TLS setting, plaintext.
    path.write_text('[temporal]\naddress = "localhost:7233"\n')
    assert not presented(load_settings(path).temporal, "client").tls
    path.write_text("[temporal.kernel_worker]\nclient_cert_file = '/c'\n")
    with pytest.raises(ConfigError, match="client_cert_file and client_key_file go together"):
        load_settings(path)


def test_bad_settings_are_named(tmp_path: Path) -> None:
    path = tmp_path / "kernos.toml"
    path.write_text('[[llm]]\nname = "x"\nmodel = "m"\nslots = 0\n')
    with pytest.raises(ConfigError, match=r"invalid setting llm\.0\.slots"):
        load_settings(path)
    path.write_text("[temporal\n")
    with pytest.raises(ConfigError, match="cannot read settings"):
        load_settings(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    # kernos's own agent (the gateway's OpenAI-compatible endpoint) keeps its name, and is
    # there whatever else is registered.
    path.write_text('[agents]\n"chat-completions" = "my_app:Chat"\n')
    with pytest.raises(ConfigError, match="agent name 'chat-completions' is kernos's own"):
        load_settings(path)
    path.write_text('[agents]\nmine = "my_app:Mine"\n')
    assert load_settings(path).agents == {
        "mine": "my_app:Mine", "chat-completions": "kernos.chat_run:ChatCompletionRun",
    }  # fmt: skip
    # Its runs carry every key holder's prompts: a pool of their own, away from agent code.
    isolation = load_settings(path).isolation
    assert isolation.pool_of("acme", "chat-completions") == "acme/chat-completions"
    assert isolation.pool_of("acme", "mine") == "acme"


@pytest.mark.parametrize(
    ("credentials", "operator", "has_dsn", "has_operator"),
    [
        (False, False, False, False),  # agent workers
        (True, False, True, False),  # kernel workers, the gateway, LLM servers
        (True, True, True, True),  # the operator's commands and scripts
        (False, True, False, False),  # the operator's file is a credential too
    ],
)
def test_each_process_reads_only_its_own_credentials(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    credentials: bool,
    operator: bool,
    has_dsn: bool,
    has_operator: bool,
) -> None:
    monkeypatch.setenv("KERNOS_STATE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kernel.toml").write_text('[database]\ndsn = "postgresql://kernos:k@db/kernos"\n')
    (tmp_path / "operator.toml").write_text(
        '[database]\noperator_dsn = "postgresql://kernos_ops:o@db/kernos"\n'
    )
    settings = load_settings(credentials=credentials, operator=operator)
    assert (settings.database.dsn is not None) == has_dsn
    assert (settings.database.operator_dsn is not None) == has_operator
    # However it is given (the environment, a shared kernos.toml), only the operator keeps it.
    monkeypatch.setenv("KERNOS_DATABASE__OPERATOR_DSN", "postgresql://kernos_ops:e@db/kernos")
    settings = load_settings(credentials=credentials, operator=operator)
    assert (settings.database.operator_dsn is not None) == has_operator
    masked = repr(load_settings(operator=True).masked())
    assert ":o@" not in masked and "kernos_ops:********@db" in masked


@pytest.mark.parametrize(
    ("argv", "operator"),
    [
        (["worker", "--kind", "kernel"], False),
        (["worker", "--kind", "agent"], False),
        (["gateway"], False),
        (["llm", "serve", "--model", "m", "--name", "n"], False),
        (["approve", "run-1"], True),
        (["budget", "set", "t", "5"], True),
        (["ps"], True),
    ],
)
def test_no_worker_or_gateway_reads_the_operators_credential(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], operator: bool
) -> None:
    from kernos import cli

    asked: list[bool] = []

    def refusing(*args: object, **kwargs: bool) -> None:
        asked.append(kwargs["operator"])
        raise ConfigError("stop here")

    monkeypatch.setattr(cli, "load_settings", refusing)
    assert cli.main(argv) == 1
    assert asked == [operator]


def test_kernos_up_gives_its_processes_no_owner_or_operator_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kernos.infra.stack import child_environment

    monkeypatch.setenv("KERNOS_DATABASE__OPERATOR_DSN", "postgresql://kernos_ops:o@db/kernos")
    monkeypatch.setenv("KERNOS_DATABASE__OWNER_DSN", "postgresql://kernos_owner:w@db/kernos")
    monkeypatch.setenv("KERNOS_TEMPORAL__ADDRESS", "temporal:7233")
    env = child_environment(tmp_path)
    assert "KERNOS_DATABASE__OPERATOR_DSN" not in env
    assert "KERNOS_DATABASE__OWNER_DSN" not in env
    assert env["KERNOS_TEMPORAL__ADDRESS"] == "temporal:7233"
    assert env["KERNOS_STATE_DIR"] == str(tmp_path)


def test_llama_server_skips_amx_repacking_where_the_cpu_advertises_amx(tmp_path: Path) -> None:
    # (A VM here advertised AMX and the server died of SIGILL in its AMX kernels.)
    from kernos.infra.llama import advertises_amx

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n")
    assert advertises_amx(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert not advertises_amx(cpuinfo)
    assert not advertises_amx(tmp_path / "missing")


def test_an_instance_sends_a_call_ahead_only_where_it_strands_none() -> None:
    def instance(name: str, model: str, **more: object) -> dict[str, object]:
        return {"name": name, "model": model, "base_url": "http://127.0.0.1:1", **more}

    settings = load_settings(
        llm=[
            instance("solo", "small"),  # the model's only instance: nowhere else to go
            instance("a", "big"),  # two of a model: a call sent ahead could wait at a busy
            instance("b", "big"),  # one while the other comes free
            instance("c", "tuned", queued=3),
        ]
    )
    assert [settings.queued(i) for i in settings.llm] == [1, 0, 0, 3]
