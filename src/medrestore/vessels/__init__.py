"""Do vessels survive restoration? Vessel segmentation and clinical vessel scores.

Two segmenters turn a fundus image into a vessel score map in [0, 1] and a binary vessel map:

- :mod:`.frangi`: :func:`frangi_vesselness` / :func:`segment_frangi`, classical, needs no training,
  for sources without manual masks (the binary map of the *clean* image is then the reference);
- :mod:`.segmenter`: a small U-Net (:mod:`medrestore.models.unet`) trained on manual masks by
  :func:`medrestore.training.segmenter.train_segmenter`, saved and loaded like the restoration
  models, applied with :func:`segment`; :class:`VesselSegmenter` is the one the pipeline uses.

:mod:`.scoring`: :func:`vessel_scores` compares a predicted map with a reference map, inside the
field of view (FOV) only: AUC, Dice, precision/recall, **thin-vessel recall** (are the 1-2 px
vessels still there?) and **invented-vessel rate** (how much of what is detected lies away from any
reference vessel: Zhao2019's CycleGAN-type enhancers invent vessels, a denoiser can turn noise into
vessels).

All widths and distances are in pixels of the image evaluated: compare scores only between images
of the same size (the pipeline evaluates at ``prepare.size``).

Numbers measured on CHASE_DB1 (all 20 images, ``prepare_arrays(..., size=N)``, first observer as
reference, inside the FOV; the modules' defaults):

- Frangi, size 768: AUC 0.922 (0.900-0.939), Dice 0.633 (0.541-0.704); size 512: AUC 0.923
  (0.906-0.940), Dice 0.641 (0.550-0.712); size 256: AUC 0.929 (0.913-0.944), Dice 0.646.
- Second observer against the first: Dice 0.769 (0.741-0.818) at full resolution, 0.781
  (0.752-0.828) at 512 px: the ceiling any segmenter can be expected to reach.
- At 512 px, Gaussian blur (sigma 1.5 px) lowers Frangi's thin-vessel recall from 0.45 to 0.25 on
  average (every image by >= 0.097) while its AUC moves by <= 0.019; Gaussian noise (sigma 25/255)
  raises the invented-vessel rate from 0.20 to 0.58 (every image by >= 0.29).
- U-Net (width 8, depth 3, 134,673 parameters) trained 300 steps (batch 8 of 64 px patches, Adam
  1e-2, 26 s on one CPU thread) on 4 images at 256 px: held-out AUC 0.968/0.945/0.960/0.944 and
  Dice 0.756/0.663/0.763/0.662 on Image_05L/09R/07L/10R, against Frangi's AUC
  0.943/0.925/0.924/0.922 and Dice 0.706/0.545/0.644/0.601.

Why Frangi is run scale by scale on the scale-normalised Hessian: :mod:`.frangi`. The
``train_segmenter`` stage: :mod:`medrestore.pipeline.train_segmenter`.
"""

from medrestore.vessels.frangi import (
    FRANGI_GAMMA,
    FRANGI_NAME,
    FRANGI_SIGMAS,
    TOP_FRACTION,
    binarize,
    fill_outside_fov,
    frangi_sigmas,
    frangi_vesselness,
    green_channel,
    segment_frangi,
)
from medrestore.vessels.scoring import (
    evaluate_segmenter,
    score_image,
    thin_vessel_mask,
    vessel_scores,
)
from medrestore.vessels.segmenter import (
    SEGMENTER_NAME,
    UNET_THRESHOLD,
    VesselSegmenter,
    load_segmenter,
    load_vessel_segmenter,
    save_segmenter,
    segment,
    segment_unet,
)

__all__ = [
    "FRANGI_GAMMA",
    "FRANGI_NAME",
    "FRANGI_SIGMAS",
    "SEGMENTER_NAME",
    "TOP_FRACTION",
    "UNET_THRESHOLD",
    "VesselSegmenter",
    "binarize",
    "evaluate_segmenter",
    "fill_outside_fov",
    "frangi_sigmas",
    "frangi_vesselness",
    "green_channel",
    "load_segmenter",
    "load_vessel_segmenter",
    "save_segmenter",
    "score_image",
    "segment",
    "segment_frangi",
    "segment_unet",
    "thin_vessel_mask",
    "vessel_scores",
]
