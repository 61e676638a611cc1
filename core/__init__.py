"""faceedit.core: the ground floor every room stands on (imports third-party packages only).

Each piece is defined once, here:

* :mod:`faceedit.core.errors`: :class:`FaceeditError` and one subclass per room;
* :mod:`faceedit.core.device`: :func:`resolve_device` (``auto``/``cpu``/``cuda``);
* :mod:`faceedit.core.files`: atomic writes, stale temporary files, ``sha256_file``;
* :mod:`faceedit.core.tensorfile`: the safetensors-with-JSON-metadata file type that latents,
  directions, priors, encoders and scorers are stored in;
* :mod:`faceedit.core.images`: generator tensors <-> uint8, image file reading and writing;
* :mod:`faceedit.core.pack`: the packed face data set (JPEG bytes and labels in one ``.npz``).
"""
