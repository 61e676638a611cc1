# The fuzz targets run under atheris through run_fuzz.py, never in the default pytest run.
collect_ignore_glob = ["*.py"]
