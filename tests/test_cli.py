"""The command line as a whole: one vocabulary of shared options across every command.

Each test walks every click command of the ``faceedit`` group (sub-groups included), so a new
command that spells a shared option differently, hides its default or leaves it unexplained
fails here.
"""
import re

import click
from click.testing import CliRunner
import pytest

from faceedit.cli import cli

# Commands left out of the vocabulary checks (none: every command, `bench` included, follows them).
EXEMPT: tuple = ()
# Spellings replaced by one name: (old, the name every command uses).
RENAMED = {"--batch-size": "--batch", "--scorers": "--scorer"}


def _commands(group=cli, prefix=""):
    for name, cmd in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + " ")
        else:
            yield path, cmd


COMMANDS = [(p, c) for p, c in _commands() if not p.startswith(EXEMPT)]


def _options(name):
    """``[(command path, Option)]`` of every command that has ``name`` among its spellings."""
    return [(p, o) for p, c in COMMANDS for o in c.params if isinstance(o, click.Option) and name in o.opts]


def test_walk_finds_the_commands():
    names = {p for p, _ in COMMANDS}
    assert {"invert", "edit", "align", "generate", "mix", "directions fit", "directions fit-all"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("old,new", sorted(RENAMED.items()))
def test_one_spelling_per_option(old, new):
    for path, cmd in COMMANDS:
        for o in cmd.params:
            if isinstance(o, click.Option) and old in o.opts:
                assert o.opts[0] == new, f"`faceedit {path}` calls {old} {o.opts[0]}; use {new} (keep {old} second)"


@pytest.mark.parametrize("name", ["--detector", "--seed", "--out", "--model", "--face", "--batch", "--steps"])
def test_shared_options_explain_themselves(name):
    found = _options(name)
    assert found, name
    for path, o in found:
        assert o.help and len(o.help) > 10, f"`faceedit {path} {name}` has no help text"


def test_defaults_shown_one_way():
    assert cli.context_settings.get("show_default") is True
    top = click.Context(cli, info_name="faceedit", **cli.context_settings)
    for path, cmd in COMMANDS:
        ctx = click.Context(cmd, info_name=path, parent=top)
        assert ctx.show_default is True, path
        for o in cmd.params:
            if not isinstance(o, click.Option):
                continue
            assert o.show_default is not False, f"`faceedit {path} {o.opts[0]}` hides its default"
            # a default computed at run time is described in the help, always as [default: ...]
            assert not re.search(r"\(default|; default |\bdefault \w", o.help or "", re.I) or "[default:" in o.help, \
                f"`faceedit {path} {o.opts[0]}`: write the default as [default: ...]: {o.help!r}"


def test_help_shows_a_default_in_brackets():
    res = CliRunner().invoke(cli, ["invert", "--help"])
    assert res.exit_code == 0
    assert "[default: out/invert]" in res.output and "[default: largest]" in res.output


def test_every_out_is_a_folder():
    for path, o in _options("--out"):
        assert isinstance(o.type, click.Path) and not o.type.file_okay, f"`faceedit {path} --out` must be a folder"


def test_detector_the_same_everywhere():
    from faceedit.alignment.detect import DETECTORS

    found = _options("--detector")
    assert {p for p, _ in found} >= {"align", "invert", "edit", "score"}
    for path, o in found:
        assert tuple(o.type.choices) == tuple(DETECTORS), path
        assert o.default == "dlib", path


def test_face_default_and_seed_type():
    faces = dict(_options("--face"))
    assert faces["invert"].default == faces["edit"].default == "largest"
    assert faces["align"].default == "all" and "datasets" in faces["align"].help  # align says why
    for path, o in _options("--seed"):
        assert o.type is click.INT, path


def test_mix_refuses_a_file_for_out(tmp_path):
    res = CliRunner().invoke(cli, ["mix", "--out", str(tmp_path / "mix.png")])
    assert res.exit_code == 2 and "--out is a folder" in res.output


def test_perceptual_takes_the_names_of_perceptual():
    """One choice set: the inversion's ``Perceptual`` names (a command supporting fewer lists a subset)."""
    from faceedit.inversion.options import Perceptual

    names = [p.value for p in Perceptual]
    found = dict((p, o) for p, o in _options("--perceptual") if not p.startswith("bench"))
    assert {"invert", "train-encoder"} <= set(found)
    assert list(found["invert"].type.choices) == names and found["invert"].default == "auto"
    for path, o in found.items():
        assert isinstance(o.type, click.Choice), path
        assert list(o.type.choices) == [n for n in names if n in o.type.choices], f"`faceedit {path} --perceptual`"
        assert o.default in o.type.choices and o.help, path


def test_landmarks_names_a_landmark_model_only():
    from faceedit.alignment.align import LANDMARK_KINDS

    found = _options("--landmarks")
    assert [p for p, _ in found] == ["align"]
    assert tuple(found[0][1].type.choices) == tuple(LANDMARK_KINDS)
    show = dict(_options("--show-landmarks"))["score"]
    assert show.is_flag and show.default is True and "--hide-landmarks" in show.secondary_opts
