"""The command line as a whole: one vocabulary of shared options across every command.

Each test walks every click command of the ``faceedit`` group (sub-groups included), so a new
command that spells a shared option differently, hides its default or leaves it unexplained
fails here.
"""
import re
from pathlib import Path

import click
from click.testing import CliRunner
import pytest

from faceedit.cli import cli
from test_architecture import FLOORS  # the rooms

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
    text = " ".join(res.output.split())  # help wraps long lines
    assert "[default: out/invert]" in text and "[default: largest]" in text


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


#: Options whose default is a path relative to the current folder, each with the reason it may be.
RELATIVE_OK = {
    ("invert", "--out"): "a user's results land where they work, as the README's `invert` then `edit` shows",
    ("edit", "--out"): "a user's results land where they work, as the README's quick start shows",
    ("generate", "--out"): "the image commands share one convention, out/<command>, like `edit`",
    ("mix", "--out"): "the image commands share one convention, out/<command>, like `edit`",
}


def _path_defaults(param, ctx):
    """The defaults of ``param`` that name a path, computed ones resolved now."""
    value = param.get_default(ctx, call=True)
    values = value if isinstance(value, (tuple, list)) else (value,)
    return [str(v) for v in values if isinstance(v, (str, Path))
            and (isinstance(param.type, click.Path) or "/" in str(v) or isinstance(v, Path))]


def test_no_default_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    top = click.Context(cli, info_name="faceedit", **cli.context_settings)
    seen = set()
    for path, cmd in COMMANDS:
        ctx = click.Context(cmd, info_name=path, parent=top)
        for p in cmd.params:
            name = p.opts[0] if isinstance(p, click.Option) else p.name
            for value in _path_defaults(p, ctx):
                if (path, name) in RELATIVE_OK:
                    assert not Path(value).is_absolute(), f"`faceedit {path} {name}` is no longer an exception"
                    seen.add((path, name))
                    continue
                assert Path(value).is_absolute(), (
                    f"`faceedit {path} {name}` defaults to {value!r}, relative to the current folder: make it "
                    "required or a path under the faceedit cache (cli.common.cache_default)")
                if callable(p.default):  # a computed default lies in the cache and says so in --help
                    assert Path(value).is_relative_to(tmp_path / "home"), (path, name, value)
                    assert str(p.show_default).startswith("<faceedit cache>/"), (path, name, p.show_default)
    assert seen == set(RELATIVE_OK), set(RELATIVE_OK) - seen


def test_bench_results_go_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    outs = {p: o for p, o in _options("--out") if p.startswith("bench ")}
    top = click.Context(cli, info_name="faceedit", **cli.context_settings)
    for path in ("bench generator", "bench scorers", "bench identity-calibration"):
        value = outs[path].get_default(click.Context(cli, info_name=path, parent=top), call=True)
        assert Path(value) == tmp_path / "home" / "bench" / path.split()[1].replace("identity-calibration", "scorers")
    res = CliRunner().invoke(cli, ["bench", "scorers", "--help"])
    assert res.exit_code == 0 and "[default: (<faceedit cache>/bench/scorers)]" in " ".join(res.output.split())
    # every other bench command asks for --out
    assert all(o.required for p, o in outs.items() if o.default is None and p != "bench inversion")


def test_the_relative_exceptions_say_why_in_help():
    for (path, name) in RELATIVE_OK:
        help_ = dict(_options(name))[path].help
        assert "current folder" in help_, (path, help_)


def _relative_path_defaults(root: Path) -> list:
    """``(file, line, function, argument, default)`` for every function default in the rooms under ``root``
    that spells a relative path: a string with a ``/`` or a ``Path("...")`` of a relative literal."""
    import ast

    found = []
    for py in sorted(root.rglob("*.py")):
        rel = py.relative_to(root)
        if rel.parts[0] not in FLOORS:  # the rooms, their scripts folders included
            continue
        for node in ast.walk(ast.parse(py.read_text(), str(py))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, d in pairs:
                text = None
                if isinstance(d, ast.Constant) and isinstance(d.value, str) and "/" in d.value:
                    text = d.value
                elif (isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", None)) == "Path"
                      and d.args and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, str)):
                    text = d.args[0].value
                if text is not None and not Path(text).is_absolute() and "://" not in text:
                    found.append((str(rel), node.lineno, getattr(node, "name", "<lambda>"), arg.arg, text))
    return found




def test_no_library_default_is_a_relative_path():
    assert _relative_path_defaults(Path(__file__).resolve().parents[1]) == []


def test_relative_default_checker_catches_one(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "x.py").write_text(
        "from pathlib import Path\n"
        "def a(out='results/x'): pass\n"
        "def b(*, root=Path('runs')): pass\n"
        "def c(mode='w+', url='https://x/y', home='/abs/dir'): pass\n")
    assert [(f[2], f[3]) for f in _relative_path_defaults(tmp_path)] == [("a", "out"), ("b", "root")]


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


def test_every_out_is_checked_before_the_work(tmp_path):
    """Every --out is an OutDir: a folder under a file or that cannot be written is a usage error
    when the command line is read, before any model loads or any photo is read."""
    from faceedit.cli.common import OutDir

    outs = _options("--out")
    assert len(outs) >= 15
    for path, o in outs:
        assert isinstance(o.type, OutDir), f"`faceedit {path} --out` is not checked before the work (use OutDir)"
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    for args in (["mix"], ["generate"], ["align", str(a_file)], ["invert", str(a_file)],
                 ["edit", str(a_file), "--attr", "smile"]):
        res = CliRunner().invoke(cli, [*args, "--out", str(a_file / "sub")])
        assert res.exit_code == 2 and "which is a file" in res.output, (args, res.output)
        assert not (tmp_path / "f.txt" / "sub").exists()


def test_commands_that_read_photos_have_the_photo_options():
    """A command that detects faces names every option its messages can suggest: --max-pixels (the
    pixel limit's message) and --min-score (a skipped detection's)."""
    for path, _ in _options("--detector"):
        opts = {n for o in dict(COMMANDS)[path].params for n in getattr(o, "opts", [])}
        assert {"--max-pixels", "--min-score"} <= opts, path
        mp = [o for o in dict(COMMANDS)[path].params if "--max-pixels" in getattr(o, "opts", [])][0]
        from faceedit.core.images import DEFAULT_MAX_PIXELS

        assert mp.default == DEFAULT_MAX_PIXELS, path


def test_batch_commands_document_the_exit_code():
    """The one batch behaviour (skip, go on, list, exit 1 if any failed) is said in each command's help."""
    for name in ("align", "invert", "edit"):
        res = CliRunner().invoke(cli, [name, "--help"])
        assert res.exit_code == 0 and "exit code is 1 if any failed" in " ".join(res.output.split()), name
