"""faceedit.training: data packs, the GAN loop, GSNR diagnostics, the GPU job.

* :mod:`.dataset` -- UTKFace + CelebA aligned with the FACES64 recipe into train/test packs
  (:mod:`.pack` format); ``faceedit dataset build``.
* :mod:`.loop` -- :class:`~.loop.Trainer` / :class:`~.loop.TrainConfig`: StyleGAN2 training for
  both mapping kinds (W: MLP, W++: transformer); ``faceedit train``.
* :mod:`.augment` -- DiffAugment (colour, translation, cutout).
* :mod:`.gsnr` -- per-parameter gradient signal-to-noise ratio from ``torch.func`` per-sample gradients.
* :mod:`.job` / :mod:`.export` -- the GPU job behind ``faceedit train``, its
  three-file export, fresh-machine resume and ``faceedit unpack-export`` to unpack.
* :mod:`.plots` -- loss and GSNR plots from the CSV logs (matplotlib, optional).

Nothing here is imported by ``import faceedit.training``; the GPU job needs only torch,
numpy, opencv, pillow and safetensors.
"""
