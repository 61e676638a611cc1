"""Benchmarks: the one place for benchmark code and the figures it produced.

The folder ``bench/`` of a checkout holds three things, and only the first is installed:

* this room, ``faceedit.bench``: the benchmarks the CLI exposes as ``faceedit bench ...``,
  one module per area, each a library function that returns its rows and writes them:

  - :mod:`~faceedit.bench.quality`: ``generator`` (generated vs real faces), ``scorers``
    (the attribute network's test card), ``identity-calibration``;
  - :mod:`~faceedit.bench.inversion`: ``inversion`` (optimisation per space, prior, loss);
  - :mod:`~faceedit.bench.methods`: ``methods`` (encoder / optim / hybrid / PTI; also
    ``faceedit bench inversion --methods ...``);
  - :mod:`~faceedit.bench.editing`: ``editing`` (the shipped directions on real faces);
  - :mod:`~faceedit.bench.report`: what every benchmark writes beside its figures
    (provenance, tables, CSV/JSON/Markdown, charts).

  The click commands live in ``faceedit/cli/bench.py`` (parse, call one function, print).
  The room sits above every library room (it may import any of them) and below the front
  door: it never imports ``faceedit.cli`` or ``faceedit.pipeline``; a benchmark that edits
  through the :class:`faceedit.Pipeline` takes one built by its caller
  (:func:`~faceedit.bench.editing.photo_check`).
* ``bench/scripts/``: GPU and development scripts, one per area (synthesis speed, inversion
  speed, training speed, encoder latency, alignment, hybrid/PTI sweeps, adopting NVIDIA
  checkpoints, following one photo through the pipeline). Run from a checkout as
  ``python bench/scripts/NAME.py``; not a package, not installed, and like ``examples/`` free
  to use the whole package.
* ``bench/results/<area>/``: every figure the README, the model cards and the docs quote,
  one folder per area (``alignment``, ``editing``, ``encoder_latency``, ``generator``,
  ``inversion``, ``inversion_speed``, ``methods``, ``scorers``, ``synthesis``,
  ``training_speed``), each with the command that produced it. Not installed.
"""
