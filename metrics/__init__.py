"""faceedit.metrics: the measuring instruments.

Modules (each imports its heavy dependencies lazily):

* :mod:`.attributes`: the attribute network (CelebA's 40 attributes, gender, age) and
  :class:`~.attributes.AttributeScorer` (``scores``, ``features``), its card figures;
* :mod:`.geometry`: smile, mouth/eyes open, head pose from dlib's 68 landmarks; MTCNN yaw;
* :mod:`.identity`: dlib's 128-d face descriptor on aligned crops, calibrated similarity;
* :mod:`.reconstruction`: MSE, PSNR, SSIM, MS-SSIM, LPIPS;
* :mod:`.distribution`: KID, Frechet distance, precision/recall on feature arrays
  (faceedit reports them in the attribute network's features as KID-attr, FD-attr);
* :mod:`.fid`: real FID/KID through pytorch-fid where its Inception weights are present;
* :mod:`.ppl`: perceptual path length in Z and W;
* :mod:`.separability`: linear separability;
* :mod:`.editing`: attribute change per unit strength, identity and drift of an edit sweep.
"""
