"""Follow one photo through ``Pipeline.edit_photo``: the rooms it visits and how often the model is resolved.

A profiler hook (``sys.setprofile``) records every Python call whose callee lives in a
faceedit room (``faceedit.<room>``, the front door counted as ``faceedit``) different from
its caller's room: one *stop*; a *module stop* is the same across modules (files). It also counts calls of ``checkpoints.registry.resolve``
and ``load_model`` (model resolutions) and calls that enter a room from a room below it
(an upward arrow at run time, e.g. through a callback).

Run from the repository root (CPU is enough)::

    python bench/scripts/follow_photo.py [--photo datasets/photos/face_recognition__obama.jpg]

Prints one JSON object: stops, rooms visited, stops per room, module entries, resolutions,
calls entering a room from below.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

ORDER = ["core", "networks", "checkpoints", "alignment", "metrics", "inversion", "editing", "training", "faceedit"]


def room_of(module: str | None) -> str | None:
    """``faceedit.inversion.projector`` -> ``inversion``; ``faceedit.pipeline`` -> ``faceedit``; else None."""
    if not module or not (module == "faceedit" or module.startswith("faceedit.")):
        return None
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else "faceedit"


def follow(fn):
    """Run ``fn()`` under the hook; return ``(result, counts dict)``."""
    stops, modules, edges, files, upward = Counter(), Counter(), Counter(), Counter(), []
    resolutions = Counter()

    def hook(frame, event, arg):
        if event != "call":
            return
        callee = frame.f_globals.get("__name__")
        room = room_of(callee)
        if room is None or frame.f_code.co_name == "<module>":   # imports are not stops
            return
        if callee == "faceedit.checkpoints.registry" and frame.f_code.co_name in ("resolve", "load_model", "locate"):
            resolutions[frame.f_code.co_name] += 1
        caller = frame.f_back
        while caller is not None and room_of(caller.f_globals.get("__name__")) is None:
            caller = caller.f_back   # through torch/numpy frames back to the faceedit frame that called in
        cmod = caller.f_globals.get("__name__") if caller is not None else None
        croom = room_of(cmod)
        if cmod != callee:
            files[callee] += 1
        if croom != room:
            stops[room] += 1
            modules[callee] += 1
            edges[f"{croom} -> {callee}.{frame.f_code.co_name}"] += 1
            if croom is not None and ORDER.index(croom) < ORDER.index(room):
                upward.append(f"{caller.f_globals['__name__']}.{caller.f_code.co_name} -> "
                              f"{callee}.{frame.f_code.co_name}")

    sys.setprofile(hook)
    try:
        out = fn()
    finally:
        sys.setprofile(None)
    return out, {"stops": sum(stops.values()), "rooms": len(stops), "stops_per_room": dict(stops),
                 "module_entries": dict(modules.most_common()),
                 "module_stops": sum(files.values()), "modules": len(files), "module_stops_each": dict(files),
                 "edges": dict(edges), "resolutions": dict(resolutions),
                 "entered_from_below": upward}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", default=os.path.join("..", "shared", "datasets", "photos",
                                                     "face_recognition__obama.jpg"))
    ap.add_argument("--model", default="faces64")
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args(argv)
    from faceedit import Pipeline
    from faceedit.core.images import load_image

    photo = load_image(a.photo)

    def run():
        pipe = Pipeline(a.model, device="cpu", invert_options={"steps": a.steps})
        return pipe.edit_photo(photo, {"smile": 2})

    _, counts = follow(run)
    print(json.dumps(counts, indent=1))
    return counts


if __name__ == "__main__":
    main()
