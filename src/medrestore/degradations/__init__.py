"""Seeded, replayable corruptions.

Every corruption is a function ``f(image, rng, **spec) -> (degraded, params)`` on float images in
[0, 1] (H x W x C, any C). ``rng`` is a ``numpy.random.Generator`` built from a list of seed words;
every random choice is drawn from it (no global RNG, no clock), and the sampled parameters are
returned, JSON-serialisable, so they can be saved beside the output. Calling :func:`corrupt` again
with the same image, spec, seed words (and FOV mask) replays the corruption byte for byte.

Results are clipped to [0, 1] and quantised to 8 bits, as an acquired image would be (GilZuluaga2021).
Sigmas of noise are on the 0-255 scale, as in the papers; blur sizes are in pixels. The two are
separate quantities: :func:`noise_sigma` and :func:`blur_sigma` read each back from a spec and the
params it recorded (a recorded ``sigma`` alone does not say which it is).

Modules (everything below is importable from ``medrestore.degradations`` itself):

==============  ================================================================================
``core``        the corruption signature, parameter draws, FOV mask helpers, ``to_float``/``to_uint8``
``noise``       Gaussian, Poisson, Gondara2016's proportion noises, salt and pepper, speckle
``blur``        Gaussian, defocus and motion blur; JPEG
``resampling``  the SR inputs (modcrop, downscale, blur_downscale) and ``upsample_bicubic``
``fundus``      cofe-Net's factors (colour, halo, hole, spots, blur) and ArcNet's cataract
``compose``     the kind registry, ``chain``/``fundus_random``, ``corrupt``/``sr_pair``, the
                seeding (``stable_id``) and the named quantities (``noise_sigma``, ``blur_sigma``)
==============  ================================================================================

Kinds (``spec = {"kind": name, **keys}``; ``x`` or ``x_range`` means: give exactly one, a fixed value
or a ``[low, high]`` range drawn uniformly per call); each module's docstring says more:

noise (:mod:`.noise`)
  ``gaussian``            sigma | sigma_range                              (Hayee2017, GilZuluaga2021)
  ``poisson``             peak | peak_range   (expected photon count at white)
  ``gaussian_proportion`` p | p_range, sigma | sigma_range                 (Gondara2016)
  ``poisson_proportion``  p | p_range, lam | lam_range, count=255          (Gondara2016)
  ``salt_pepper``         amount | amount_range, salt_ratio=0.5
  ``speckle``             sigma | sigma_range  (multiplicative: x + x * N(0, sigma/255))
blur and compression (:mod:`.blur`)
  ``gaussian_blur``       sigma | sigma_range (pixels)
  ``defocus_blur``        radius | radius_range (integer pixels), alias_blur=0.1
  ``motion_blur``         length | length_range (odd kernel size), angle | angle_range=[0, 180],
                          direction=0.0
  ``jpeg``                quality | quality_range (1-100)
super-resolution inputs, the output SMALLER than the input (:mod:`.resampling`)
  ``downscale``           scale (integer factor, e.g. 2 or 4), method="bicubic"
  ``blur_downscale``      scale, sigma | sigma_range, method="bicubic"     (Krenz2018)
fundus (cofe-Net, Shen et al. 2020; ArcNet for the cataract); inside the FOV, result times the FOV
(:mod:`.fundus`)
  ``fundus_colour``       brightness_range=[0.7, 1.2], contrast_range=[0.6, 1.4],
                          saturation_range=[0.6, 1.4]
  ``fundus_halo``         inner_range=[0.75, 1.0], outer_range=[1.0, 1.5], offset=0.125, strength=1.0,
                          tint_choices=[1, 2]
  ``fundus_hole``         diameter_range=[0.4, 0.7], min_mean=0.25
  ``fundus_spots``        count_range=[5, 10], size_range=[0.01, 0.05], reference_size=512
  ``fundus_blur``         sigma_range=[5, 15] (at reference_size=512; scaled with min(H, W)),
                          kernel="full" | "cofe"
  ``cataract``            offset=0.3, kernel_choices=[1, 3, 5, 7], haze_range=[0.6, 0.8],
                          attenuation=0.8, contrast_range=[0.9, 1.3], brightness_range=[0.9, 1.0],
                          saturation_range=[0.9, 1.3]
composition (:mod:`.compose`)
  ``chain``               steps: [spec, ...] applied in order with one rng; params {"steps": [...]}
  ``fundus_random``       cofe-Net's random subset of its 3 factors (illumination = colour, halo,
                          hole; spots; blur): probabilities={factor: p} (0.5 each),
                          at_least_one=True, options={component: {keys}}

The FOV mask. ``corrupt(image, spec, seed_words, fov=mask)`` passes the boolean H x W mask to every
corruption that accepts a ``fov`` argument (the fundus ones and the two compositions); without a
mask they treat the whole frame as the FOV. The other corruptions act on the whole frame.

Super-resolution pairs. ``downscale`` and ``blur_downscale`` first crop the image at its top-left
corner to a multiple of ``scale`` (the usual "modcrop"), then resize it. The matching
high-resolution target is therefore ``image[:lr_h * s, :lr_w * s]`` where ``s`` is the product of
all scales in the spec (:func:`spec_scale`); :func:`sr_pair` returns ``(hr, lr, params)`` directly::

    hr, lr, params = sr_pair(clean_uint8, {"kind": "downscale", "scale": 4}, seed_words)
    assert hr.shape[:2] == (lr.shape[0] * 4, lr.shape[1] * 4)
"""

from medrestore.degradations.blur import BLUR_SIGMA_KINDS, defocus_blur, gaussian_blur, jpeg_compression, motion_blur
from medrestore.degradations.compose import (
    DEGRADATIONS,
    FUNDUS_GROUPS,
    apply_spec,
    blur_sigma,
    chain,
    corrupt,
    fundus_random,
    noise_sigma,
    spec_scale,
    sr_pair,
    stable_id,
)
from medrestore.degradations.core import Degradation, to_float, to_uint8
from medrestore.degradations.fundus import (
    HALO_TINTS,
    cataract_haze,
    fundus_blur,
    fundus_colour,
    fundus_halo,
    fundus_hole,
    fundus_spots,
)
from medrestore.degradations.noise import (
    NOISE_SIGMA_KINDS,
    gaussian_noise,
    gaussian_proportion,
    poisson_noise,
    poisson_proportion,
    salt_pepper,
    speckle_noise,
)
from medrestore.degradations.resampling import blur_downscale, downscale, modcrop, upsample_bicubic

__all__ = [
    "BLUR_SIGMA_KINDS",
    "DEGRADATIONS",
    "FUNDUS_GROUPS",
    "HALO_TINTS",
    "NOISE_SIGMA_KINDS",
    "Degradation",
    "apply_spec",
    "blur_downscale",
    "blur_sigma",
    "cataract_haze",
    "chain",
    "corrupt",
    "defocus_blur",
    "downscale",
    "fundus_blur",
    "fundus_colour",
    "fundus_halo",
    "fundus_hole",
    "fundus_random",
    "fundus_spots",
    "gaussian_blur",
    "gaussian_noise",
    "gaussian_proportion",
    "jpeg_compression",
    "modcrop",
    "motion_blur",
    "noise_sigma",
    "poisson_noise",
    "poisson_proportion",
    "salt_pepper",
    "sr_pair",
    "spec_scale",
    "speckle_noise",
    "stable_id",
    "to_float",
    "to_uint8",
    "upsample_bicubic",
]
