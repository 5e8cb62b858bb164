"""The `--kafka*` flags of `run` and `report`: one group for both, TLS files checked before anything
connects (exit 2, naming the flag and the file), and every client built from the same settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent import cli
from agent.adapters.kafka import KafkaSettings
from agent.cli import EXIT_CANNOT_RUN, main
from agent.runtime import tool_commands
from agent.runtime.main import RunOptions
from sandbox.kafka import KafkaTlsFiles, generate_kafka_pki

RUN = ["run", "--rules", "rules/kafka-resize.yaml", "--prometheus", "http://127.0.0.1:1", "--kafka", "k:9093"]
REPORT = ["report", "--events-topic", "decisions", "--kafka", "k:9093"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> KafkaTlsFiles:
    """The sandbox Kafka's CA and client certificate (sandbox/kafka.py), plus a few bad files beside them."""
    files = generate_kafka_pki(pki=tmp_path_factory.mktemp("pki"))
    folder = files.ca_file.parent
    (folder / "not-pem.txt").write_text("this is not a certificate\n")
    subprocess.run(
        ["openssl", "pkey", "-in", "client.key", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return files


def tls_flags(pki: KafkaTlsFiles, protocol: str = "SSL") -> list[str]:
    return [
        f"--kafka-security-protocol={protocol}",
        f"--kafka-ca-file={pki.ca_file}",
        f"--kafka-cert-file={pki.cert_file}",
        f"--kafka-key-file={pki.key_file}",
    ]


def captured_run_options(monkeypatch: pytest.MonkeyPatch) -> list[RunOptions]:
    seen: list[RunOptions] = []

    async def fake_run_agent(options: RunOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(cli, "run_agent", fake_run_agent)
    return seen


def test_run_passes_the_client_certificate_to_the_kafka_settings(
    monkeypatch: pytest.MonkeyPatch, pki: KafkaTlsFiles
) -> None:
    seen = captured_run_options(monkeypatch)

    assert main([*RUN, *tls_flags(pki)]) == 0

    assert [options.kafka for options in seen] == [
        KafkaSettings(
            bootstrap_servers="k:9093",
            security_protocol="SSL",
            ssl_cafile=str(pki.ca_file),
            ssl_certfile=str(pki.cert_file),
            ssl_keyfile=str(pki.key_file),
        )
    ]


def test_sasl_ssl_with_a_client_certificate_gives_both_to_the_clients(
    monkeypatch: pytest.MonkeyPatch, pki: KafkaTlsFiles, tmp_path: Path
) -> None:
    seen = captured_run_options(monkeypatch)
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    sasl = ["--kafka-sasl-mechanism=SCRAM-SHA-512", "--kafka-sasl-username=autopilot"]

    assert main([*RUN, *tls_flags(pki, "SASL_SSL"), *sasl, f"--kafka-sasl-password-file={password}"]) == 0

    settings = seen[0].kafka
    assert settings is not None
    kwargs = settings.client_kwargs()
    assert (kwargs["security_protocol"], kwargs["sasl_plain_password"]) == ("SASL_SSL", "s3cret")
    assert kwargs["ssl_context"].check_hostname
    assert settings.ssl_certfile == str(pki.cert_file)


def test_report_takes_the_same_flags(monkeypatch: pytest.MonkeyPatch, pki: KafkaTlsFiles) -> None:
    asked: list[KafkaSettings] = []

    async def fake_read_topic(settings: KafkaSettings, topic: str) -> list[tuple[bytes, bytes]]:
        asked.append(settings)
        return []

    monkeypatch.setattr(tool_commands, "read_topic", fake_read_topic)

    assert main([*REPORT, "--json", *tls_flags(pki)]) == 0

    assert [(settings.ssl_certfile, settings.ssl_keyfile) for settings in asked] == [
        (str(pki.cert_file), str(pki.key_file))
    ]


@pytest.mark.parametrize(
    ("replace", "drop", "message"),
    [
        (
            {"--kafka-cert-file": "missing.crt"},
            (),
            "--kafka-cert-file {dir}/missing.crt: No such file or directory",
        ),
        ({"--kafka-ca-file": "missing.crt"}, (), "--kafka-ca-file {dir}/missing.crt: No such file or directory"),
        ({}, ("--kafka-key-file",), "--kafka-cert-file {dir}/client.crt needs --kafka-key-file too"),
        ({}, ("--kafka-cert-file",), "--kafka-key-file {dir}/client.key needs --kafka-cert-file too"),
        (
            {"--kafka-key-file": "broker.key"},
            (),
            "--kafka-key-file {dir}/broker.key is not the private key of --kafka-cert-file {dir}/client.crt",
        ),
        (
            {"--kafka-key-file": "encrypted.key"},
            (),
            "--kafka-key-file {dir}/encrypted.key: the key is encrypted",
        ),
        (
            {"--kafka-cert-file": "not-pem.txt"},
            (),
            "--kafka-cert-file {dir}/not-pem.txt / --kafka-key-file {dir}/client.key: not a PEM certificate",
        ),
        ({"--kafka-ca-file": "not-pem.txt"}, (), "--kafka-ca-file {dir}/not-pem.txt: no PEM CA certificate in it"),
        (
            {"--kafka-security-protocol": "PLAINTEXT"},
            (),
            "--kafka-ca-file, --kafka-cert-file, --kafka-key-file need --kafka-security-protocol SSL or SASL_SSL",
        ),
    ],
)
@pytest.mark.parametrize("command", [RUN, REPORT], ids=["run", "report"])
def test_bad_tls_flags_stop_the_command_naming_the_flag_and_the_file(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pki: KafkaTlsFiles,
    *,
    command: list[str],
    replace: dict[str, str],
    drop: tuple[str, ...],
    message: str,
) -> None:
    seen = captured_run_options(monkeypatch)
    folder = pki.ca_file.parent
    flags = []
    for flag in tls_flags(pki):
        name, _, value = flag.partition("=")
        if name in drop:
            continue
        if name in replace:
            value = replace[name] if name == "--kafka-security-protocol" else str(folder / replace[name])
        flags.append(f"{name}={value}")

    assert main([*command, *flags]) == EXIT_CANNOT_RUN

    assert message.format(dir=folder) in capsys.readouterr().err
    assert seen == []
