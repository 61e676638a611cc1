"""bench/scripts/photo_path.py: the wait for a quiet machine and the table of where the command's time went
(the timed runs themselves are the benchmark's, not the suite's); hybrid_cpu_steps.py's argument checks;
cpu_synthesis_paths.py's table at a toy size."""
import pytest


@pytest.fixture(scope="module")
def pp(bench_script):
    return bench_script("photo_path")


def _run(wall, **timings):
    return {"wall_s": wall, "load": 0.1, "timings": timings}


def test_where_the_time_went_adds_the_main_path_and_leaves_the_rest_to_start_up(pp):
    res = {"cli": {"baseline": {"photo": [_run(3.0, load=0.1, align_wait=0.2, invert=1.5, write=0.2, read=0.05),
                                          _run(3.4, load=0.1, align_wait=0.2, invert=1.7, write=0.2, read=0.05),
                                          _run(3.2, load=0.1, align_wait=0.2, invert=1.6, write=0.2, read=0.05)]},
                   "current": {"photo": [_run(2.5, load=0.1, preload=0.1, align_wait=0.0, invert=0.8, write=0.1,
                                              read=0.04)] * 3}}}
    lines = pp.command_stages_table(res)
    rows = {ln.split(" | ")[0].lstrip("| "): ln.rstrip(" |").split(" | ")[1:] for ln in lines if ln.startswith("| ")}
    assert rows["invert"] == ["1.60 s", "800 ms"]
    assert rows["preload"] == ["-", "100 ms"]  # a stage one tree does not have
    assert rows["read"] == ["50 ms", "40 ms"]  # the worker's, listed after the main path
    # the rest: wall less the main path's stages (read and align ran in the worker, overlapped)
    assert rows["the rest: start-up (Python, imports, torch), exit"] == ["1.10 s", "1.40 s"]
    assert list(rows)[2:5] == ["load", "preload", "align_wait"]  # the main path in its order, after the header
    assert pp.command_stages_table({"cli": {"baseline": {"photo": [_run(3.0)]}, "current": {"photo": []}}}) == []


def test_wait_for_quiet_waits_for_the_load_and_gives_up_after_its_time(pp, monkeypatch):
    loads = iter([0.9, 0.6, 0.2, 0.2])
    monkeypatch.setattr(pp, "_load", lambda: next(loads))
    slept = []
    monkeypatch.setattr(pp.time, "sleep", slept.append)
    monkeypatch.setitem(pp.QUIET, "max_load", 0.3)
    monkeypatch.setitem(pp.QUIET, "wait_s", 600.0)
    assert pp._wait_for_quiet() == 0.2 and len(slept) == 2
    monkeypatch.setattr(pp, "_load", lambda: 5.0)
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(pp.time, "monotonic", lambda: next(clock))
    assert pp._wait_for_quiet() == 5.0  # a machine that stays busy: the run goes on, its load recorded


@pytest.mark.parametrize("args, message", [(["--steps", "20,25", "--ref", "30"], "--ref 30 is not one of --steps"),
                                           (["--paths", "poly,fast"], "--paths takes default or reference"),
                                           (["--paths", ","], "--paths takes")])
def test_hybrid_cpu_steps_refuses_a_run_it_could_not_report_before_loading_anything(bench_script, capsys, args,
                                                                                    message):
    """A --ref step count the run leaves out (no row to pair with) or an unknown path is a usage
    error at once, not a failure after the faces are inverted."""
    steps = bench_script("hybrid_cpu_steps")
    with pytest.raises(SystemExit) as e:
        steps.main(["--pack", "/nonexistent.npz", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cpu_synthesis_paths_reports_each_path_and_the_projectors_choice(bench_script, tmp_path):
    """One toy size: a row with the three paths' times, the up-conv count the rule reads and the
    path ``default_path`` takes for it; a malformed --sizes is a usage error."""
    import json

    from faceedit.inversion.projector import up_conv_macs
    from faceedit.networks import Generator

    paths = bench_script("cpu_synthesis_paths")
    assert paths.main(["--sizes", "16:128:16", "--repeats", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "cpu_synthesis_paths_1t.json").read_text())["rows"]
    g = Generator(z_dim=256, w_dim=256, resolution=16, channel_base=128, channel_max=16, mapping_layers=2)
    assert len(rows) == 1 and rows[0]["up_conv_macs"] == up_conv_macs(g) and rows[0]["default"] == "poly"
    assert set(rows[0]["seconds"]) == {"reference", "shared", "poly"} and min(rows[0]["seconds"].values()) > 0
    table = (tmp_path / "cpu_synthesis_paths_1t.md").read_text().splitlines()
    assert table[-1].startswith("| 16 | 128 | 16 | 0M |") and "| poly | " in table[-1]
    with pytest.raises(SystemExit) as e:
        paths.main(["--sizes", "64:2048"])
    assert e.value.code == 2


def test_folder_edit_reads_the_commands_rate_line_and_tables_medians(bench_script):
    """folder_edit.py parses the rate line `faceedit edit DIR` prints (batchrun.rate_line) and tables
    the median run of each setting with its stages in ms."""
    from faceedit.batchrun import rate_line, throughput

    fe = bench_script("folder_edit")
    line = rate_line(throughput([{"photos": 200}], 12.5))
    m = fe.RATE.search(f"edited 200 of 200 input(s) in 14.1 s; records in out\n{line}\n")
    assert m and (m.group(1), float(m.group(2)), float(m.group(3))) == ("200", 12.5, 16.0)

    def run(rate, wall, invert):
        return {"run_rate": rate, "wall_rate": 200 / wall, "wall_s": wall, "load": 0.5,
                "stages": {"invert": invert, "write": 0.1}}
    res = {"device": "cuda", "device_name": "X", "count": 200, "distinct": 8, "photos": "P", "detector": "mtcnn",
           "threads": None, "baseline": "abc", "baseline_commit": "abc1234567890", "current_commit": "def1234567890",
           "dirty": False, "repeats": 3, "diff": {"batch 16": 2},
           "runs": {"baseline": [run(3.0, 70.0, 0.3)] * 3,
                    "batch 16": [run(9.0, 30.0, 0.05), run(10.0, 25.0, 0.04), run(30.0, 20.0, 0.01)]}}
    rows = {ln.split(" | ")[0].lstrip("| "): ln.rstrip(" |").split(" | ")[1:] for ln in fe.report(res).splitlines()
            if ln.startswith("| ") and not ln.startswith("| run")}
    assert rows["batch 16"][:3] == ["10.00", "8.00", "25.0 s"]
    assert rows["batch 16"][4] == "40 ms" and rows["batch 16"][-2] == "2"
    assert rows["baseline"][-2] == ""


def test_gpu_probe_tables_each_setting_and_refuses_bad_arguments(bench_script):
    """gpu_inversion_probe.py: a setting that could not run is a row saying why; the kernels and the
    one-photo tables follow; a wrong setting or step pair stops it before any model loads."""
    probe = bench_script("gpu_inversion_probe")
    ok = {"batch": 1, "config": "graphs", "short_s": 0.05, "long_s": 0.25, "long_median_s": 0.26, "per_step_ms": 2.0,
          "fixed_ms": 30.0, "first_call_s": 1.5, "graph": "replayed"}
    res = {"device": "cuda", "device_name": "GPU", "torch": "2.x", "model": "faces64", "detector": "mtcnn",
           "method": "hybrid", "short": 10, "long": 110, "reps": 3, "photos_n": 4,
           "steps": [ok, {"batch": 1, "config": "eager", "error": "RuntimeError: boom"}],
           "kernels": {1: {"kernels": 9000, "kernels_per_step": 900.0, "gpu_ms": 40.0}},
           "photos": {"graphs": {"median_s": 0.41, "best_s": 0.39, "stages": {"invert": 0.25, "write": 0.1}}}}
    md = probe.report(res)
    assert "| 1 | graphs | 2.00 ms | 30 ms | 0.250 s | 1.50 s | replayed |" in md
    assert "| 1 | eager | RuntimeError: boom |" in md
    assert "| 1 | 900 | 40.0 ms |" in md
    assert "| graphs | 0.410 s | 0.390 s | 250 ms | 100 ms |" in md
    for bad in (["--configs", "eager,nope"], ["--short", "5", "--long", "5"]):
        with pytest.raises(SystemExit):
            probe.main(["--device", "cpu", *bad])
