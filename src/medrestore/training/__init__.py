"""The training engine: Lightning for every model of the registry.

* :mod:`.config`: :class:`~medrestore.training.config.TrainConfig`, optimisers and learning-rate schedules;
* :mod:`.data`: paired / unpaired patch datasets and step-deterministic samplers;
* :mod:`.callbacks`: the curve, atomic checkpoints, the NaN guard;
* :mod:`.losses`: every training loss, by name;
* :mod:`.paired`: supervised restoration (denoising, deblurring, super-resolution);
* :mod:`.gan`: SRGAN and the two-way GANs of Zhao2019 (manual optimisation);
* :mod:`.chain`: the chained restorations of a chain corruption;
* :mod:`.segmenter`: the U-Net vessel segmenter;
* :mod:`.convergence`: the verdict on a training curve (also read by the report);
* :mod:`.engine`: :func:`~medrestore.training.engine.train_model`, one resumable run from arrays to the stage's outputs.

Nothing is imported here: a reader of one module (the report reads :mod:`.convergence`) does not
load, nor depend in dvc.yaml on, the Lightning engine. Import from the module itself.
"""
