"""The `--kafka*` flags, shared by every command that talks to Kafka (`run`, `report`), and their check.

One argument group, so the commands cannot drift apart, and one check before anything connects: a
TLS file that is missing, unreadable, not PEM, encrypted, or a client certificate without its key (or
with a key that is not its own) is a bad flag, reported with the flag and the file (the command exits 2),
not a handshake failure minutes later. Every Kafka client the agent makes is built from the
`KafkaSettings` returned here (agent.adapters.kafka: admin, elections, the CloudEvents producer).
"""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

from agent.adapters.kafka import KafkaSettings
from agent.adapters.kafka.admin import SECURITY_PROTOCOLS

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaFlagError(ValueError):
    """A `--kafka*` flag the command cannot run with; the message names the flag and the file."""


def add_kafka_arguments(parser: argparse.ArgumentParser, *, bootstrap_help: str) -> None:
    group = parser.add_argument_group(
        "Kafka",
        "How to reach Kafka. With SSL or SASL_SSL the broker's certificate is checked against --kafka-ca-file "
        "(default: the system's CAs) and its host name; --kafka-cert-file and --kafka-key-file add a client "
        "certificate, for listeners with TLS client authentication (Strimzi's `authentication: type: tls`).",
    )
    group.add_argument("--kafka", metavar="BOOTSTRAP", help=bootstrap_help)
    group.add_argument("--kafka-security-protocol", default="PLAINTEXT", choices=SECURITY_PROTOCOLS)
    group.add_argument("--kafka-sasl-mechanism", choices=SASL_MECHANISMS)
    group.add_argument("--kafka-sasl-username")
    group.add_argument("--kafka-sasl-password-file", type=Path, metavar="FILE")
    group.add_argument("--kafka-ca-file", type=Path, metavar="FILE", help="PEM CA certificates for the brokers")
    group.add_argument(
        "--kafka-cert-file", type=Path, metavar="FILE", help="PEM client certificate (with its chain, if any)"
    )
    group.add_argument("--kafka-key-file", type=Path, metavar="FILE", help="PEM private key of --kafka-cert-file")


def kafka_settings(args: argparse.Namespace) -> KafkaSettings | None:
    """The settings the flags describe, None without --kafka; `KafkaFlagError` when they cannot work."""
    if not args.kafka:
        return None
    tls_flags = {
        "--kafka-ca-file": args.kafka_ca_file,
        "--kafka-cert-file": args.kafka_cert_file,
        "--kafka-key-file": args.kafka_key_file,
    }
    given = [flag for flag, path in tls_flags.items() if path is not None]
    if given and args.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        raise KafkaFlagError(
            f"{', '.join(given)} need --kafka-security-protocol SSL or SASL_SSL (not {args.kafka_security_protocol})"
        )
    for flag, path in [*tls_flags.items(), ("--kafka-sasl-password-file", args.kafka_sasl_password_file)]:
        if path is not None:
            _check_readable(flag, path)
    if (args.kafka_cert_file is None) != (args.kafka_key_file is None):
        given_flag, missing_flag = (
            ("--kafka-cert-file", "--kafka-key-file")
            if args.kafka_key_file is None
            else ("--kafka-key-file", "--kafka-cert-file")
        )
        raise KafkaFlagError(f"{given_flag} {tls_flags[given_flag]} needs {missing_flag} too")
    check_tls_files(ca_file=args.kafka_ca_file, cert_file=args.kafka_cert_file, key_file=args.kafka_key_file)
    password = (
        args.kafka_sasl_password_file.read_text(encoding="utf-8").strip() if args.kafka_sasl_password_file else None
    )
    try:
        return KafkaSettings(
            bootstrap_servers=args.kafka,
            security_protocol=args.kafka_security_protocol,
            sasl_mechanism=args.kafka_sasl_mechanism,
            sasl_username=args.kafka_sasl_username,
            sasl_password=password,
            ssl_cafile=str(args.kafka_ca_file) if args.kafka_ca_file else None,
            ssl_certfile=str(args.kafka_cert_file) if args.kafka_cert_file else None,
            ssl_keyfile=str(args.kafka_key_file) if args.kafka_key_file else None,
        )
    except ValueError as error:
        raise KafkaFlagError(f"--kafka {args.kafka}: {error}") from None


def _check_readable(flag: str, path: Path) -> None:
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as error:
        raise KafkaFlagError(f"{flag} {path}: {error.strerror or error}") from None


class _EncryptedKeyError(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKeyError


def check_tls_files(*, ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> None:
    """Load the files as the clients will (OpenSSL), so a bad one is named now: not PEM, an encrypted
    key (there is no flag for its password), or a key that does not belong to the certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except ssl.SSLError as error:
            raise KafkaFlagError(f"--kafka-ca-file {ca_file}: no PEM CA certificate in it ({error.reason})") from None
    if cert_file is None or key_file is None:
        return
    try:
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file), password=_no_password)
    except _EncryptedKeyError:
        raise KafkaFlagError(
            f"--kafka-key-file {key_file}: the key is encrypted; give it unencrypted (Strimzi's user.key is)"
        ) from None
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise KafkaFlagError(
                f"--kafka-key-file {key_file} is not the private key of --kafka-cert-file {cert_file}"
            ) from None
        raise KafkaFlagError(
            f"--kafka-cert-file {cert_file} / --kafka-key-file {key_file}: not a PEM certificate and its "
            f"private key ({error.reason or error})"
        ) from None
