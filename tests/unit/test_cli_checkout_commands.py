"""`sandbox` and `demo` exist only where the checkout's sandbox package can be imported.

In the checkout (these tests run there) `agent.cli` finds `sandbox.cli` by name and adds its commands;
when the module cannot be found, as from an installed wheel, argparse refuses them as unknown choices.
tests/integration/test_wheel.py checks the same from a real installed wheel.
"""

from __future__ import annotations

import pytest

from agent import cli


def test_the_checkout_offers_sandbox_and_demo() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["sandbox", "status"]).command.__module__ == "sandbox.cli"
    assert parser.parse_args(["demo", "--simulated"]).simulated is True


@pytest.mark.parametrize("missing", ["no_such_checkout_package.cli", "agent.no_such_commands"])
def test_without_the_sandbox_they_are_unknown_commands(
    missing: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "CHECKOUT_COMMANDS", missing)
    parser = cli.build_parser()
    assert "sandbox" not in parser.format_help() and "demo" not in parser.format_help()
    for command in ("sandbox", "demo"):
        with pytest.raises(SystemExit) as caught:
            parser.parse_args([command])
        assert caught.value.code == 2
        assert f"invalid choice: '{command}'" in capsys.readouterr().err
    assert parser.parse_args(["lint", "rules/"]).command is cli.cmd_lint
