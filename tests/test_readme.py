"""Every example in the README runs as written: each `objdisc` command parses, the Python example runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import cv2
import numpy as np
import pytest
import torch

from objdisc.cli import cli
from objdisc.models.backbones import build_model
from objdisc.models.specs import get_spec

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL_FENCES = {"", "bash", "sh", "console"}


def code_blocks(languages: set[str]) -> list[str]:
    """The README's fenced blocks whose language is in ``languages``, in order."""
    blocks: list[str] = []
    lines: list[str] | None = None
    language = ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if lines is None:
                lines, language = [], line[3:].strip()
            else:
                if language in languages:
                    blocks.append("\n".join(lines) + "\n")
                lines = None
        elif lines is not None:
            lines.append(line)
    return blocks


def objdisc_commands() -> list[list[str]]:
    """Each `objdisc ...` command of the shell blocks as argv (continuations joined, comments cut)."""
    commands = []
    for block in code_blocks(SHELL_FENCES):
        for line in block.replace("\\\n", " ").splitlines():
            if not re.search(r"(^|[;&|]\s*)objdisc\s", line.strip()):
                continue  # another program, or a folder tree
            tokens = shlex.split(line, comments=True)
            current: list[str] = []
            for token in [*tokens, ";"]:
                if token in {";", "&&", "||", "|"}:
                    if current and current[0] == "objdisc":
                        commands.append(current[1:])
                    current = []
                else:
                    current.append(token)
    return commands


def parse(argv: list[str]) -> click.Command:
    """Parse ``argv`` down to its leaf command, as click would before running it; return that command."""
    command: click.Command = cli
    path = ["objdisc"]
    argv = list(argv)
    while isinstance(command, click.Group) and argv and argv[0] in command.commands:
        path.append(argv[0])
        command = command.commands[argv.pop(0)]
    command.make_context(" ".join(path), argv)
    return command


def test_the_readme_has_commands_for_every_subcommand():
    used = {argv[0] for argv in objdisc_commands() if argv and not argv[0].startswith("-")}
    assert set(cli.commands) <= used, f"README shows no example of {sorted(set(cli.commands) - used)}"


@pytest.mark.parametrize("argv", objdisc_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_every_readme_command_parses(argv: list[str]):
    try:
        parse(argv)
    except click.exceptions.Exit:  # --help, --version
        pass
    except click.ClickException as error:
        pytest.fail(f"README: `objdisc {shlex.join(argv)}`: {error.format_message()}")


def test_the_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (block,) = code_blocks({"python"})
    torch.manual_seed(0)
    torch.save(build_model(get_spec("dinov2_reg")).state_dict(), tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(tmp_path / "photo.jpg"), rng.integers(0, 256, (100, 130, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)  # the README's own example
    result = scope["result"]
    x1, y1, x2, y2 = (int(v) for v in result.boxes[0])
    assert 0 <= x1 < x2 <= 130 and 0 <= y1 < y2 <= 100
    assert result.masks[0].shape == (scope["x"].shape[2] // 14, scope["x"].shape[3] // 14)
    assert result.pixel_masks()[0].shape == (100, 130)
