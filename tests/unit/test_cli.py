"""`phoenix preview` without the Pulumi CLI: a clear message and a non-zero exit, not a traceback."""

from phoenix_components.cli import main


def test_preview_without_pulumi_cli_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["preview", "--stack", "dev"]) == 3
    err = capsys.readouterr().err
    assert "Pulumi CLI" in err and "not on PATH" in err
