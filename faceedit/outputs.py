"""What `faceedit invert` and `faceedit edit` write: the record schema, the writers, and the folder guard.

Every file is written atomically (``faceedit.core.files``) through an :class:`OutputFolder`,
which lets no output land on an input of the run or on a file faceedit did not write,
whatever the names: before writing a file it lists it, with the command and the input it
comes from, in the folder's ``.faceedit-outputs.jsonl``, and a file there that the list does
not give to the same command and input is never replaced. Output names are planned for the
whole run before any work (:meth:`OutputFolder.plan_stems`): two inputs with one stem
(``same.jpg``, ``same.png``) get ``same`` and ``same_png``, and a stem whose names would hit
an input or someone else's file moves on the same way. Images meant for viewing (side-by-side
and sweep strips) are upscaled with nearest-neighbour interpolation so that each face is at
least :data:`VIEW_SIZE` pixels wide; the reconstruction and edited crops keep the model's
resolution.

Inversion outputs per face (``<stem>_<face>``, the face's index left to right):
``.latent.safetensors``, ``.png`` (reconstruction), ``_side.png`` (target | reconstruction)
and ``.json`` (the record, written last: it marks the face as done, for the settings it lists
under ``settings``; see :func:`inversion_settings`). Edit outputs
per photo: ``<stem>_edit.png``, ``<stem>_edit.json`` and per face ``<stem>_<face>_edit.png``,
``_side.png``, ``_edit.latent.safetensors``; with a sweep also ``<stem>_<face>_sweep.png``
and ``<stem>_sweep_<attr>.gif``.

The manifest. The folder's list is also where a batch run records the state of each of its
inputs: ``pending`` (planned), ``done`` (naming the record files that mark it done) or
``failed`` (with the message), keyed by the command, the input (its path, and its size and
modification time: a file replaced since is pending again) and a hash of the run's settings
(:func:`settings_key`). A run with one process appends to ``.faceedit-outputs.jsonl``
(:data:`MANIFEST`); a run of several processes (``torchrun``), possibly on several machines
sharing the folder, has each process append only to its own journal
``.faceedit-outputs.d/<host>.<pid>.<token>.jsonl`` (:data:`JOURNALS`), so that no two processes
ever write one file: appends from two machines to one file over NFS can overwrite each other,
and no lock is needed where nothing is shared. Every line is a whole JSON object ending in a
newline, written with one ``os.write`` and made durable with ``fsync`` before the work it
announces goes on; a reader takes the list file and every journal as one list and leaves a last
line without its newline (a writer killed mid-line) unread. What an input's lines mean is
:meth:`OutputFolder.input_state`: ``done`` while the files its done line names are as it left
them, else ``failed`` if its last outcome was a failure, else ``pending``. Lines of either kind are skipped by the
other kind's reader, so folders written before the states existed read as they did.
"""
from __future__ import annotations

import io
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path

import numpy as np

from faceedit.core.errors import OutputError, PipelineError
from faceedit.core.files import atomic_write_bytes, atomic_write_text, check_writable_dir
from faceedit.core.images import make_grid, save_image
from faceedit.inputs import PHOTO_EXTS, collect_photos  # noqa: F401 - re-exported, their old home

log = logging.getLogger(__name__)

#: The list of the files faceedit wrote into an output folder (one JSON object a line).
MANIFEST = ".faceedit-outputs.jsonl"
#: Held while a folder's list is read or appended to: an edit run writes its photos in threads
#: (``Pipeline.edit_file(writer=)``) while the run records states.
_LIST_LOCK = threading.RLock()
#: The folder of the per-process journals a run of several processes writes instead of :data:`MANIFEST`.
JOURNALS = ".faceedit-outputs.d"
#: The states a batch run records for its inputs.
STATES = ("pending", "done", "failed")
#: Where the last finished inversion run is remembered, under the cache.
LAST_INVERSION = "last_inversion.json"
#: Smallest side, in pixels, of one face in a side-by-side or sweep strip.
VIEW_SIZE = 256


def _file_key(path):
    """``(device, inode)`` of an existing file (links and other names of one file compare equal), else ``None``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _source_key(source) -> str:
    return "" if source is None else str(Path(source).resolve())


def settings_key(settings) -> str:
    """A short hash of a run's settings (any JSON-able value): what keys its inputs' states in the manifest."""
    text = json.dumps(settings, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class _Lists:
    """What the list and the journals of one folder say, read on from where this process last stopped.

    Attributes:
        files: ``{list file: [(device, inode), bytes read]}``.
        owners: ``{output name: {"command:source", ...}}``.
        states: ``{(command, source, settings key): {state: its last line}}``.
        finished: ``{run id: done and failed lines of that run}``.
        ended: ``{run id: {ranks that said they finished}}``.
    """

    def __init__(self):
        self.files, self.owners, self.states, self.finished, self.ended = {}, {}, {}, {}, {}
        self._seq = 0  # the order lines were read in (the list file first, then the journals)

    @staticmethod
    def paths(root: Path) -> list:
        """The list file and the journals, in a fixed order."""
        try:
            journals = sorted(n for n in os.listdir(root / JOURNALS) if n.endswith(".jsonl"))
        except OSError:
            journals = []
        return [str(root / MANIFEST)] + [str(root / JOURNALS / n) for n in journals]

    def refresh(self, root: Path) -> "_Lists":
        """Read what was appended since the last call; start over when a file read before is gone,
        replaced or shorter (the folder was deleted and written again)."""
        paths = self.paths(root)
        if not self._read_all(paths):
            self.__init__()
            self._read_all(paths)
        return self

    def _read_all(self, paths: list) -> bool:
        if set(self.files) - set(paths):
            return False
        for p in paths:
            ident, done = self.files.get(p, (None, 0))
            try:
                with open(p, "rb") as f:
                    st = os.fstat(f.fileno())
                    if ident is not None and (ident != (st.st_dev, st.st_ino) or st.st_size < done):
                        return False
                    f.seek(done)
                    data = f.read(st.st_size - done)
            except OSError:  # not there (yet, or any more)
                if ident is not None:
                    return False
                continue
            end = data.rfind(b"\n") + 1  # a line still being written is read next time
            self.files[p] = [(st.st_dev, st.st_ino), done + end]
            for line in data[:end].decode("utf-8", errors="replace").splitlines():
                self._take(line)
        return True

    def _take(self, line: str) -> None:
        try:
            e = json.loads(line)
            if "file" in e:
                self.owners.setdefault(str(e["file"]), set()).add(f"{e['command']}:{e['source']}")
            elif e.get("state") in STATES:
                self._seq += 1
                e["_seq"] = self._seq
                self.states.setdefault((e["command"], e["input"], e["settings"]), {})[e["state"]] = e
                if e["state"] != "pending" and e.get("run"):
                    self.finished[e["run"]] = self.finished.get(e["run"], 0) + 1
            elif "ended" in e:
                self.ended.setdefault(str(e["run"]), set()).add(int(e["rank"]))
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # damaged by hand, or a newer kind
            log.debug("manifest line left out (%s: %s): %.200s", type(err).__name__, err, line)


class OutputFolder:
    """The folder one run writes into: which names its outputs get, and what it must never replace.

    Args:
        root: the output folder (created when the first file is written).
        inputs: every file the run reads (photos, latents, the photo to paste into, a
            checkpoint file); none of them is ever written, under any name.
        command: the command whose outputs these are (``invert``, ``edit``, ``align``, ...):
            an output is replaced only by the same command for the same input.
        what: how the folder is named in messages (``--out``).
        journal: append this process's lines to a journal of its own (a run of several
            processes) instead of the folder's list file.
    """

    def __init__(self, root, inputs=(), *, command: str, what: str = "--out", journal: bool = False):
        self.root = Path(root)
        self.command = command
        self.what = what
        self.journal = bool(journal)
        self._inputs = {k: str(p) for p in inputs for k in [_file_key(p)] if k is not None}
        self._claimed = {}  # name -> owner key, this run (this process)
        self._journal_file = None  # (pid, path) of this process's journal

    def __getstate__(self):  # worker processes keep their own reading of the list, and their own journal
        return {**self.__dict__, "_claimed": {}, "_journal_file": None}

    # -- reading the list ------------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def _lists(self) -> _Lists:
        with _LIST_LOCK:
            return _LISTS.setdefault(str(self.root.absolute()), _Lists()).refresh(self.root)

    def _read(self) -> dict:
        """``{name: {"command:source", ...}}``, read on from where this process last stopped."""
        return self._lists().owners

    def input_state(self, source, settings: str, *, lists: _Lists | None = None, of=()):
        """The state of one input of this command under the settings key ``settings``.

        Args:
            source: the input (its resolved path is the key).
            settings: :func:`settings_key` of the run's settings.
            lists: a reading of the list to use (default: read on now).
            of: the input's other files, as its lines name them under ``of`` (an edit's latents).
        Returns:
            ``(state, line)``: ``("done", line)`` when a done line exists and the files it names
            are there as it left them (:meth:`done_holds`), else ``("failed", line)`` when a
            failed line exists and came after the last done line, else ``("pending",
            line)``; ``None`` when the list never named the input. A done or failed line holds
            for the input's files as they were (their sizes and modification times): an input
            whose file was replaced since, or another set of files, is pending again.
        """
        lists = self._lists() if lists is None else lists
        slot = lists.states.get((self.command, _source_key(source), settings))
        if not slot:
            return None
        now = [_stat_of(p) for p in (source, *of)]
        done, failed = (slot.get(k) for k in ("done", "failed"))
        if done is not None and done.get("stat") == now and self.done_holds(done):
            return "done", done
        if failed is not None and failed.get("stat") == now and (done is None or _later(failed, done)):
            return "failed", failed  # a failure after the last done line (or with none)
        return "pending", slot.get("pending") or done or failed

    def done_holds(self, line: dict) -> bool:
        """Whether the files a done line names are still those it was written after (same sizes and
        modification times: not deleted, not rewritten since by a run with other settings)."""
        return [_stat_of(self.root / n) for n in line.get("files", ())] == line.get("files_stat")

    def finished_in(self, run: str) -> int:
        """How many inputs the run ``run`` recorded as done or failed so far (every process's lines)."""
        return self._lists().finished.get(run, 0)

    def ended_in(self, run: str) -> set:
        """The ranks of the run ``run`` that recorded the end of their share (:meth:`record_end`)."""
        return set(self._lists().ended.get(run, ()))

    # -- writing the list ------------------------------------------------------------------
    def _append(self, entries: list) -> None:
        """Append JSON lines with one ``os.write`` and ``fsync``: to :data:`MANIFEST`, or to this
        process's journal (created with a header line naming its host, process and rank).

        Raises:
            OutputError: the lines could not be written whole (a full disk).
        """
        if not entries:
            return
        with _LIST_LOCK:
            self._append_locked(entries)

    def _append_locked(self, entries: list) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.manifest
        if self.journal:
            if self._journal_file is None or self._journal_file[0] != os.getpid():
                name = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.jsonl"
                self._journal_file = (os.getpid(), self.root / JOURNALS / name)
                (self.root / JOURNALS).mkdir(exist_ok=True)
                entries = [{"journal": 1, "host": socket.gethostname(), "pid": os.getpid(),
                            "rank": int(os.environ.get("RANK", 0)), "world_size": int(os.environ.get("WORLD_SIZE", 1)),
                            "command": self.command, "time": _now()}, *entries]
            path = self._journal_file[1]
        data = "".join(json.dumps(e, default=str) + "\n" for e in entries).encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if os.write(fd, data) != len(data):  # one write: appends of concurrent runs do not interleave
                raise OutputError(f"could not append to {path} (is the disk full?); the run stopped here and resumes")
            os.fsync(fd)
        finally:
            os.close(fd)

    def record_states(self, entries: list, *, settings: str, run: str | None = None) -> None:
        """Record inputs' states in the list, all in one append.

        Args:
            entries: ``{"input": path, "state": "pending" | "done" | "failed", ...}`` each; a done
                one names its record files under ``files`` (relative to the folder), a failed one
                its message under ``error``; ``of`` lists other files the input stands for.
            settings: :func:`settings_key` of the run's settings.
            run: the run's id (progress is counted per run).
        """
        now = _now()
        lines = []
        for e in entries:
            if e["state"] not in STATES:
                raise ValueError(f"state {e['state']!r} is not one of {', '.join(STATES)}")
            of = [str(p) for p in e.get("of", ())]
            if e["state"] == "done":
                e = {**e, "files_stat": [_stat_of(self.root / n) for n in e.get("files", ())]}
            lines.append({**e, "input": _source_key(e["input"]), "of": of,
                          "stat": [_stat_of(p) for p in (e["input"], *of)], "command": self.command,
                          "settings": settings, "run": run, "rank": int(os.environ.get("RANK", 0)), "time": now})
        self._append(lines)

    def record_end(self, run: str, rank: int) -> None:
        """Record that rank ``rank`` of the run ``run`` has finished its share."""
        self._append([{"ended": True, "run": run, "rank": int(rank), "time": _now()}])

    def _owner(self, source) -> str:
        return f"{self.command}:{_source_key(source)}"

    def _name(self, path) -> str:
        """``path`` (a file in this folder) relative to the folder, as the list spells it."""
        p = Path(path)
        for a, b in ((p, self.root), (p.absolute(), self.root.absolute())):
            try:
                return a.relative_to(b).as_posix()
            except ValueError:
                continue
        raise OutputError(f"{path} is not inside the output folder {self.root}")

    def _owns_name(self, name: str, source, owners: dict | None = None) -> bool:
        owners = self._read() if owners is None else owners
        return self._owner(source) in owners.get(name, ())

    def owns(self, path, source=None) -> bool:
        """Whether faceedit's list gives ``path`` (a file in this folder) to this command and ``source``."""
        return self._owns_name(self._name(path), source)

    def is_input(self, path) -> bool:
        """Whether ``path`` is (another name of) a file the run reads."""
        k = _file_key(path)
        return k is not None and k in self._inputs

    # -- before the work -------------------------------------------------------------------
    def check(self) -> "OutputFolder":
        """Raise :class:`OutputError` now if the folder cannot be written (see ``check_writable_dir``)."""
        check_writable_dir(self.root, what=self.what)
        return self

    def _existing(self) -> list:
        if not self.root.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                      if (p.is_file() or p.is_symlink()) and p.name != MANIFEST and not p.name.endswith(".part")
                      and p.relative_to(self.root).parts[0] != JOURNALS)

    def plan_stems(self, sources: list, pattern, *, stem=None) -> dict:
        """Choose each input's output stem for the whole run, before any work.

        An input gets its own stem (``stem(source)``, by default the file's stem) unless another
        input of the run has it already, or one of the files the stem's outputs would be named
        (``pattern(stem)``, a regex over names relative to the folder) exists and is an input
        or not faceedit's output of this command for this input. Then it tries
        ``<stem>_<suffix>`` (``same_png``), then ``<stem>_<suffix>_2``, ``_3``, ... The choice
        depends only on the inputs and the folder, so a re-run finds the same names.

        Args:
            sources: the inputs, in order (paths; ``None`` is not allowed here).
            pattern: ``pattern(stem) -> str``, the regex of every name that stem's outputs take.
            stem: ``stem(source) -> str``, the default stem (relative path for folder trees).
        Returns:
            ``{source: stem}``.
        """
        import bisect

        existing = sorted((n.casefold(), n) for n in self._existing())  # every pattern starts with its stem
        keys = [k for k, _ in existing]
        owners = self._read()
        used, out = set(), {}
        for src in sources:
            base = stem(src) if stem is not None else Path(src).stem
            ext = Path(src).suffix.lower().lstrip(".") or "file"
            for k in range(1, 10_000):
                cand = base if k == 1 else f"{base}_{ext}" if k == 2 else f"{base}_{ext}_{k - 1}"
                if cand.casefold() in used:
                    continue
                rx = re.compile(pattern(re.escape(cand)), re.IGNORECASE)
                i, near = bisect.bisect_left(keys, cand.casefold()), []
                while i < len(keys) and keys[i].startswith(cand.casefold()):
                    near.append(existing[i][1])
                    i += 1
                if all(not rx.fullmatch(n) or (not self.is_input(self.root / n) and self._owns_name(n, src, owners))
                       for n in near):
                    break
            used.add(cand.casefold())
            out[src] = cand
        return out

    def earlier_of(self, template: str, stems: dict) -> dict:
        """The names this command already wrote here for each input (what a run replaces), the folder
        listed once: ``{source: [names]}``.

        Args:
            template: a names template of this module (``EDIT_NAMES``; ``{s}`` the stem).
            stems: ``{source: its stem}``.
        """
        import bisect

        existing = sorted((n.casefold(), n) for n in self._existing())  # a stem's names start with it
        keys, owners, out = [k for k, _ in existing], self._read(), {}
        for src, stem in stems.items():
            rx = re.compile(template.replace("{s}", re.escape(stem)), re.IGNORECASE)
            i, found = bisect.bisect_left(keys, stem.casefold()), []
            while i < len(keys) and keys[i].startswith(stem.casefold()):
                n = existing[i][1]
                if rx.fullmatch(n) and self._owns_name(n, src, owners):
                    found.append(n)
                i += 1
            out[src] = found
        return out

    # -- writing ---------------------------------------------------------------------------
    def claim(self, path, source=None) -> Path:
        """List ``path`` as this command's output for ``source``, after checking it may be written.

        Call it before writing the file (so a killed run leaves nothing unlisted).

        Raises:
            OutputError: ``path`` is an input of the run, exists and is not faceedit's
                output of this command for ``source``, or another input of this run took it.
        """
        with _LIST_LOCK:
            return self._claim(path, source)

    def _claim(self, path, source) -> Path:
        name = self._name(path)
        path = self.root / name
        owner = self._owner(source)
        if self.is_input(path):
            raise OutputError(f"refusing to write {path}: it is an input of this run; choose another {self.what}")
        if name in self._claimed and self._claimed[name] != owner:
            raise OutputError(f"refusing to write {path} twice in one run (for {self._claimed[name].split(':', 1)[1]} "
                              f"and {_source_key(source)}); choose another {self.what}")
        if path.exists() or path.is_symlink():  # replaced only when the list gives it to this command and input
            if not self._owns_name(name, source):
                raise OutputError(f"refusing to replace {path}: faceedit's `{self.command}` did not write it for "
                                  f"this input (it is not in {self.manifest.name}); move it, or choose another "
                                  f"{self.what}")
        elif self._claimed.get(name) != owner:  # a new file: listed first (a line listed twice is harmless)
            self._append([{"file": name, "command": self.command, "source": _source_key(source)}])
        self._claimed[name] = owner
        return path

    def write_bytes(self, path, data: bytes, source=None) -> Path:
        """:meth:`claim`, then ``atomic_write_bytes``."""
        return atomic_write_bytes(self.claim(path, source), data, protect=list(self._inputs.values()))

    def write_text(self, path, text: str, source=None) -> Path:
        return self.write_bytes(path, text.encode("utf-8"), source)

    def save_image(self, path, arr: np.ndarray, source=None) -> Path:
        return save_image(self.claim(path, source), arr, protect=list(self._inputs.values()))

    def save_latent(self, path, latent, source=None) -> Path:
        return latent.save(self.claim(path, source))


#: Each output folder's list as this process has read it: folder -> :class:`_Lists`.
_LISTS: dict = {}


def _stat_of(path) -> list | None:
    """``[size, modification time in ns]`` of an input file (``None`` when it is missing): which file a state is of."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


def _later(a: dict, b: dict) -> bool:
    """Whether state line ``a`` was written after ``b``: by their times (one second), then their reading order."""
    return (str(a.get("time", "")), a.get("_seq", 0)) > (str(b.get("time", "")), b.get("_seq", 0))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def as_folder(out, inputs=(), *, command: str) -> OutputFolder:
    """``out`` if it is an :class:`OutputFolder`, else a new one over the path ``out``."""
    return out if isinstance(out, OutputFolder) else OutputFolder(out, [p for p in inputs if p is not None],
                                                                  command=command)


#: Regexes of the names one stem's outputs take, per command (``{s}``: the escaped stem).
INVERT_NAMES = r"{s}_\d+(\.latent\.safetensors|\.png|_side\.png|\.json)"
EDIT_NAMES = (r"{s}_(edit\.png|edit\.json|\d+_edit\.png|\d+_side\.png|\d+_edit\.latent\.safetensors|\d+_sweep\.png"
              r"|sweep_[^/]+\.gif)")


def names(template: str):
    """``pattern(stem)`` for :meth:`OutputFolder.plan_stems` from a template of this module."""
    return lambda s: template.replace("{s}", s)


#: What must match between a face's record and a run for the face to count as done.
SETTINGS_KEYS = ("model_id", "space", "method", "steps", "seed", "prior", "prior_weight", "perceptual",
                 "optimize_noise", "detector", "min_score", "aligned", "other")
_NOT_SETTINGS = ("batch_size", "callback")


def inversion_settings(pipe, *, aligned: bool) -> dict:
    """The settings an inversion result depends on, as its record stores them under ``settings``.

    Args:
        pipe: the :class:`~faceedit.pipeline.Pipeline`.
        aligned: the inputs are aligned crops (no detection).
    Returns:
        ``{key: value}`` for :data:`SETTINGS_KEYS`; steps not given read ``default on cpu|cuda``.
    """
    from faceedit.inversion.options import InversionOptions

    o = {k: v for k, v in pipe.invert_options.items() if v is not None and k not in _NOT_SETTINGS}
    dflt = InversionOptions()
    steps, pw = o.pop("steps", None), o.pop("prior_weight", dflt.prior_weight)
    perceptual = o.pop("perceptual", dflt.perceptual)
    return {"model_id": pipe.model_id, "space": pipe.space, "method": pipe.method,
            "steps": steps if steps is not None else f"default on {pipe.device.type}",
            "seed": int(o.pop("seed", dflt.seed)), "prior": str(o.pop("prior", "gaussian")),
            "prior_weight": None if pw is None else float(pw),
            "perceptual": str(getattr(perceptual, "value", perceptual)),
            "optimize_noise": bool(o.pop("optimize_noise", dflt.optimize_noise)),
            "detector": None if aligned else pipe.detector, "min_score": None if aligned else pipe.min_score,
            "aligned": bool(aligned), "other": {k: repr(v) for k, v in sorted(o.items())}}


def settings_differences(here: dict, there: dict | None) -> list:
    """``["space: 'w+' here, 'w' there", ...]`` for every setting of ``here`` that ``there`` differs in."""
    there = there or {}
    return [f"{k}: {here.get(k)!r} here, {there.get(k, 'not recorded')!r} there" for k in here
            if here.get(k) != there.get(k, "not recorded")]


def read_record(path) -> dict | None:
    """A JSON record, or ``None`` if it is missing or damaged (a damaged record is redone)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def folder_inversions(folder: OutputFolder, settings: dict) -> list:
    """Every face record in ``folder`` made with ``settings`` whose latent file exists (sorted by photo, face).

    A face the manifest lists as done with these settings comes as ``{photo, face, latent, json}``
    without its record being read (a folder of 100k faces is not read again at the end of a run);
    the others are their records as read."""
    rx = re.compile(r".+_\d+\.json")
    lists = folder._lists()
    recs, owners, key = [], lists.owners, settings_key(settings)
    listed = {}  # record name -> (photo, face) of the faces the list's done lines give these settings
    for (command, source, _), slot in lists.states.items():
        done = slot.get("done")
        if command == "invert" and done is not None and done.get("record_settings") == key:
            listed.update({n: (source, face, done) for n, face in zip(done.get("files", ()), done.get("faces", ()))})
    for n in folder._existing():
        if "/" in n or not rx.fullmatch(n):
            continue
        if n in listed:  # the record need not be read: its done line says whose it is and with which settings
            photo, face, line = listed[n]
            latent = folder.root / (n[:-len(".json")] + ".latent.safetensors")
            if folder._owns_name(n, photo, owners) and latent.is_file() and folder.done_holds(line):
                recs.append({"photo": photo, "face": int(face), "latent": str(latent.resolve()),
                             "json": str((folder.root / n).resolve())})
            continue
        rec = read_record(folder.root / n)
        if (rec and rec.get("settings") == settings and folder._owns_name(n, rec.get("photo"), owners)
                and Path(str(rec.get("latent", ""))).is_file()):
            rec.setdefault("json", str((folder.root / n).resolve()))
            recs.append(rec)
    return sorted(recs, key=lambda r: (str(r["photo"]), int(r["face"])))


def last_inversion_path() -> Path:
    """Where the last finished `faceedit invert` run is recorded (``cache_dir()/last_inversion.json``)."""
    from faceedit.checkpoints.registry import cache_dir

    return cache_dir() / LAST_INVERSION


def read_last_inversion() -> dict:
    """The record of the last finished inversion run.

    Raises:
        PipelineError: there is none, or it is damaged or empty.
    """
    p = last_inversion_path()
    if not p.is_file():
        raise PipelineError("nothing to edit: pass a photo (`faceedit edit photo.jpg --attr smile`), --latent FILE, "
                            f"or run `faceedit invert PHOTO` first (its result is remembered in {p})")
    try:
        rec = json.loads(p.read_text())
        faces = rec["faces"]
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{p} is damaged ({e}); run `faceedit invert PHOTO` again") from e
    if not faces:
        raise PipelineError(f"{p} lists no faces; run `faceedit invert PHOTO` again")
    return rec


def write_last_inversion(records: list, *, model: str, model_id: str, space: str, out) -> Path:
    """Remember an inversion run for `faceedit edit` with no input (the last to finish wins)."""
    from faceedit import __version__

    last = {"version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": model, "model_id": model_id, "space": space, "out": str(Path(out).resolve()),
            "faces": [{"photo": r["photo"], "face": r["face"], "latent": r["latent"], "json": r["json"]}
                      for r in records]}
    path = last_inversion_path()
    atomic_write_text(path, json.dumps(last, indent=2))
    return path


def upscale_for_view(images: np.ndarray, size: int | None = None) -> np.ndarray:
    """``[N, H, W, 3]`` tiles enlarged by an integer factor (nearest neighbour) to at least ``size``
    (default :data:`VIEW_SIZE`) pixels."""
    size = VIEW_SIZE if size is None else size
    f = max(1, -(-size // max(1, min(images.shape[1:3]))))
    return images if f == 1 else images.repeat(f, axis=1).repeat(f, axis=2)


def view_grid(tiles, cols: int) -> np.ndarray:
    """Tiles of one size in a grid of ``cols`` columns, each upscaled for viewing."""
    return make_grid(upscale_for_view(np.stack(tiles)), cols=cols)


def inversion_stem(photo, face, stem: str | None = None) -> str:
    """``<stem>_<face index>`` of a face's inversion outputs (index 0 for an aligned crop); ``stem``
    defaults to the photo's (a run gives the one :meth:`OutputFolder.plan_stems` chose)."""
    return f"{Path(photo).stem if stem is None else stem}_{face.index if face is not None else 0}"


def inversion_done(out, photo, face, settings: dict | None = None, *, stem: str | None = None) -> bool:
    """Whether a face has a finished result in ``out``: its record (written last) exists, names this
    photo and, when ``settings`` are given, was made with them, and its latent file exists."""
    rec = read_record(Path(out) / f"{inversion_stem(photo, face, stem)}.json")
    return bool(rec and rec.get("photo") == str(Path(photo).resolve())
                and (settings is None or rec.get("settings") == settings)
                and Path(str(rec.get("latent", ""))).is_file())


def write_inversion(out, photo, face, latent, model, target: np.ndarray, reconstruction: np.ndarray,
                    metrics: dict, method: str, *, stem: str | None = None, settings: dict | None = None) -> dict:
    """Write one face's inversion outputs and its record.

    Args:
        out: output folder (a path, or the run's :class:`OutputFolder`).
        photo: the source photo's path (never written).
        face: its ``AlignedFace`` (``None`` for an aligned crop).
        latent: the face's latent (batch of one) with the batch's metadata.
        model: the :class:`~faceedit.checkpoints.loaded.LoadedModel`.
            The record's ``tuning_steps`` is written for a PTI latent only.
        target: ``[R, R, 3]`` uint8 aligned target.
        reconstruction: ``[R, R, 3]`` uint8 synthesis of the latent.
        metrics: ``{name: float}`` reconstruction metrics of this face.
        method: the inversion method.
        stem: the photo's output stem (default: its file stem).
        settings: the run's :func:`inversion_settings`, stored in the record (what resuming compares).
    Returns:
        The record (also written as ``<stem>_<face>.json``), with its own path under ``json``.
    Raises:
        OutputError: a name would replace an input or a file faceedit did not write.
    """
    from faceedit import __version__

    folder = as_folder(out, [photo], command="invert")
    out = folder.root
    idx = face.index if face is not None else 0
    stem = inversion_stem(photo, face, stem)
    meta = dict(latent.meta)
    meta["source"] = str(Path(photo).resolve())
    meta["face_index"] = idx
    if face is not None:
        meta["alignment"] = face.metadata()
    one = type(latent)(space=latent.space, codes=latent.codes, model_id=latent.model_id, z=latent.z,
                       noise=latent.noise, tuning=latent.tuning, meta=meta)
    lat_path = out / f"{stem}.latent.safetensors"
    folder.save_latent(lat_path, one, photo)
    folder.save_image(out / f"{stem}.png", reconstruction, photo)
    folder.save_image(out / f"{stem}_side.png", view_grid([target, reconstruction], cols=2), photo)
    rec = {"version": __version__, "photo": meta["source"], "face": idx, "model": model.name,
           "model_id": model.model_id, "model_sha256": model.sha256, "space": one.space, "method": method,
           "steps": meta["steps"], "steps_requested": meta["steps_requested"], "seed": meta["seed"],
           "prior": meta["prior"], "prior_weight": meta["prior_weight"], "perceptual": meta["perceptual"],
           "perceptual_requested": meta.get("perceptual_requested"),
           "optimize_noise": meta["optimize_noise"], "losses": meta["losses"], "metrics": metrics,
           "seconds_batch": meta["seconds"], "alignment": meta.get("alignment"),
           "detector_score": None if face is None else float(face.score), "settings": settings,
           "latent": str(lat_path.resolve()), "reconstruction": str((out / f"{stem}.png").resolve()),
           "side_by_side": str((out / f"{stem}_side.png").resolve())}
    if isinstance(meta.get("tuning"), dict) and "steps" in meta["tuning"]:
        rec["tuning_steps"] = meta["tuning"]["steps"]
    jpath = out / f"{stem}.json"
    folder.write_text(jpath, json.dumps(rec, indent=2), photo)
    rec["json"] = str(jpath.resolve())
    return rec


def write_edit(out, stem: str, src, result, *, pairs: dict, layers, inversion: dict | None, unit: str,
               model_id: str, timings: dict, sweep=None, source=None) -> dict:
    """Write an edit's outputs and its record ``<stem>_edit.json``.

    Args:
        out: output folder (a path, or the run's :class:`OutputFolder`).
        stem: file stem (the photo's, or the one the run planned).
        src: the source photo's path, or ``None`` (never written).
        result: an :class:`~faceedit.pipeline.EditResult`, or a list of
            :class:`~faceedit.pipeline.FaceEdit` when there was no photo to paste into.
        pairs: the edits ``{key: strength}``.
        layers: the layers the edits were restricted to, or ``None``.
        inversion: how the photo was inverted (``None`` for latent inputs).
        unit: the strength unit.
        model_id: the model's id.
        timings: seconds per stage so far (``write`` is added).
        sweep: a :class:`~faceedit.pipeline.Sweep`, or ``None``.
        source: the input the outputs belong to in the folder's list (default ``src``).
    Returns:
        The record.
    Raises:
        OutputError: a name would replace an input or a file faceedit did not write.
    """
    from faceedit import __version__

    folder = as_folder(out, [src], command="edit")
    out = folder.root
    source = src if source is None else source
    faces = result if isinstance(result, list) else result.faces
    photo_out = None
    if not isinstance(result, list):
        t1 = time.perf_counter()
        photo_out = out / f"{stem}_edit.png"
        folder.save_image(photo_out, result.photo, source)
        timings = {**timings, "write": round(time.perf_counter() - t1, 3)}
    rec = {"version": __version__, "photo": str(Path(src).resolve()) if src else None,
           "photo_out": str(photo_out) if photo_out else None, "model_id": model_id, "inversion": inversion,
           "edits": {k: float(v) for k, v in pairs.items()}, "unit": unit, "layers": layers, "timings": timings,
           "faces": []}
    for fe in faces:
        idx = fe.face.index if fe.face is not None else 0
        fstem = f"{stem}_{idx}"
        folder.save_image(out / f"{fstem}_edit.png", fe.crop, source)
        tiles = [fe.reconstruction, fe.crop]
        if fe.face is not None and fe.face.crop.shape[0] > 1:
            tgt = fe.face.crop
            if tgt.shape[0] != fe.crop.shape[0]:
                import cv2

                tgt = cv2.resize(tgt, fe.crop.shape[:2][::-1], interpolation=cv2.INTER_AREA)
            tiles.insert(0, tgt)
        folder.save_image(out / f"{fstem}_side.png", view_grid(tiles, cols=len(tiles)), source)
        folder.save_latent(out / f"{fstem}_edit.latent.safetensors", fe.edited, source)
        score = fe.face.score if fe.face is not None and fe.face.detector else None
        rec["faces"].append({"face": idx, "crop": str(out / f"{fstem}_edit.png"), "space": fe.edited.space,
                             "latent_in_space": fe.latent.space,
                             "latent": str(out / f"{fstem}_edit.latent.safetensors"),
                             "detector_score": None if score is None else float(score),
                             "applied": fe.edited.meta.get("edits", [])[-len(pairs):],
                             "alignment": fe.face.metadata() if fe.face is not None else None})
    if sweep is not None:
        rec["sweep"] = write_sweep(folder, stem, sweep, source=source)
    folder.write_text(out / f"{stem}_edit.json", json.dumps(rec, indent=2, default=str), source)
    return rec


def write_sweep(out, stem: str, sweep, *, source=None) -> dict:
    """Write a sweep: one strip per face (rows: attributes, columns: strengths), one GIF per
    attribute (there and back, 0.25 s a frame).

    Args:
        out: output folder (a path, or the run's :class:`OutputFolder`).
        stem: file stem.
        sweep: a :class:`~faceedit.pipeline.Sweep`.
        source: the input these outputs belong to (never written).
    Returns:
        ``{"strengths", "strips", "gifs"}`` with the written paths.
    """
    import imageio.v2 as imageio

    folder = as_folder(out, [source], command="edit")
    out = folder.root
    written = {"strengths": sweep.strengths, "strips": [], "gifs": []}
    for idx, tiles in sweep.strips:
        p = out / f"{stem}_{idx}_sweep.png"
        folder.save_image(p, view_grid(tiles, cols=len(sweep.strengths)), source)
        written["strips"].append(str(p))
    for key, frames in sweep.frames.items():
        buf = io.BytesIO()
        imageio.mimsave(buf, frames + frames[-2:0:-1], format="GIF", duration=0.25, loop=0)
        p = out / f"{stem}_sweep_{re.sub(r'[^A-Za-z0-9-]+', '-', key)}.gif"
        folder.write_bytes(p, buf.getvalue(), source)
        written["gifs"].append(str(p))
    return written


__all__ = ["PHOTO_EXTS", "VIEW_SIZE", "MANIFEST", "JOURNALS", "STATES", "settings_key",
           "OutputFolder", "as_folder", "names", "INVERT_NAMES",
           "EDIT_NAMES", "SETTINGS_KEYS", "inversion_settings", "settings_differences", "read_record",
           "folder_inversions", "collect_photos", "last_inversion_path", "read_last_inversion",
           "write_last_inversion", "write_inversion", "write_edit", "write_sweep", "upscale_for_view",
           "inversion_done", "inversion_stem"]
