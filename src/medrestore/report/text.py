"""The report's prose: the methods paragraph (data, corruptions, training runs, metrics), the vessel
segmenter's section and the convergence rule."""

from __future__ import annotations

import html
import json
from pathlib import Path

from medrestore.core.io import read_json


def _trained(models_root: Path | None, task: str, model: str) -> str:
    """How many steps a run actually trained, read from its own metrics.json."""
    if models_root is None:
        return "not trained"
    folder = Path(models_root) / task / model
    if not (folder / "metrics.json").is_file():
        return "not trained"
    m = read_json(folder / "metrics.json")
    return f"{m.get('steps', '?')} steps"


def split_sentence(params: dict) -> str:
    """How the images were split, as params.yaml's ``patchify`` says."""
    pa, seed = params["patchify"], params["seed"]
    regions = f"fewer than three images are split by disjoint {pa['region_grid']}x{pa['region_grid']} regions"
    drawn = f"val {pa['val_fraction']} and test {pa['test_fraction']} of the subjects drawn with seed {seed}"
    if pa.get("split", "standard") == "standard":
        return ("Splits are by subject (both eyes of one person in one split): a dataset's published test subjects "
                "where it has them (CHASE_DB1: 11L-14R, its vessel-segmentation papers' split), validation subjects "
                f"({pa['val_fraction']} of the rest) drawn with seed {seed}; other datasets: {drawn}; {regions}")
    return f"Splits are by subject (both eyes of one person in one split), {drawn}; {regions}"


def methods_paragraph(params: dict, models_root: Path | None = None) -> str:
    """How the numbers were made, from params.yaml and the runs' own metrics.json."""
    d, p, pa = params["download"], params["prepare"], params["patchify"]
    tasks = params["corrupt"]["tasks"]
    task_txt = "; ".join(
        f"`{name}`: train {json.dumps(spec['train'])}, "
        f"test {', '.join(f'{k} {json.dumps(v)}' for k, v in spec['test'].items())}"
        for name, spec in tasks.items()
    )
    runs = params["train"]["runs"]
    run_txt = "; ".join(f"{key}: {_trained(models_root, r['task'], r['model'])}" for key, r in runs.items())
    finetune = params["train"].get("finetune") or {}
    if finetune:
        run_txt += (
            ". Fine-tuned (the network starts from another trained model's weights, as Hayee2017 fine-tuned a "
            "pre-trained DnCNN): "
            + "; ".join(
                f"{key}: {_trained(models_root, r['task'], r['model'])} from {r['init']}" for key, r in finetune.items()
            )
        )
    chains = params["train"].get("chains") or {}
    if chains:
        run_txt += (
            ". Chains (Hayee2017: a trained model, frozen, then a bicubic reduction, then a network trained on its "
            "outputs): "
            + "; ".join(
                f"{key} = {c['first']} -> /{c['downscale']} -> {c['model']} "
                f"({_trained(models_root, c['task'], c.get('method', c['model']))}, "
                f"on {'/'.join(str(n) for n in c.get('subset') or ['all'])} train/val patches), "
                f"reported as `{c.get('method', c['model'])}`"
                for key, c in chains.items()
            )
        )
    profile = params["train"].get("profile", "standard")
    return (
        f"Sources: {', '.join(d['sources'])}. Each image's field of view (FOV) is detected from the image, the black "
        f"border is cropped ({p['mode']}) and the image resized to {p['size']}x{p['size']}. {split_sentence(params)}; "
        f"training patches are {pa['patch_size']}x{pa['patch_size']} at stride {pa['stride']}, at least "
        f"{pa['min_fov_fraction']:.0%} inside the FOV. Corruptions (sigma on the 0-255 scale, clipped and quantised to "
        f"8 bits): {task_txt}. Training (the papers' recipes in train.models under the `{profile}` budget profile, "
        f"weights at the best validation PSNR kept): {run_txt}. Baselines are given the true noise sigma. Metrics: "
        "PSNR on RGB (whole image, inside the FOV, inside the FOV eroded by 3 px, green channel), SSIM on Y, NIQE and "
        "BRISQUE on Y, entropy of the 8-bit grey histogram (pyiqa). Vessels: the pipeline's vessel segmenter (next "
        "section) is run on every image; 'thin vessels kept' is the recall of reference vessels at most 2 px wide "
        "minus the recall expected by chance, 'vessels invented' the share of detected vessel pixels more than 2 px "
        "from any reference vessel, both inside the FOV; the reference is the manual mask where the dataset has one, "
        "else the segmentation of the clean image. Brackets are 95% BCa bootstrap intervals over the test subjects "
        "(each person's images averaged first, both eyes of one person resampled together; paired Wilcoxon tests "
        "likewise over subjects); each table states the numbers of test images and subjects they rest on."
    )


def segmenter_section(segmenter_dir: Path | None) -> tuple[list[str], str]:
    """What the vessel scores rest on: the segmenter and its own accuracy on the clean test images."""
    path = Path(segmenter_dir) / "metrics.json" if segmenter_dir else None
    if path is None or not path.is_file():
        text = ("Vessel scores use the multiscale Frangi segmenter (green channel, CLAHE, top 12% of FOV scores): "
                "no dataset with manual vessel masks was among the sources.")
        return ["## Vessel segmenter", "", text, ""], f"<h2>Vessel segmenter</h2><p>{html.escape(text)}</p>"
    m = read_json(path)

    def rng(key: str) -> str:
        v = m.get(key)
        return f"{v['mean']:.3f} ({v['min']:.3f}-{v['max']:.3f})" if isinstance(v, dict) and "mean" in v else "–"

    if m.get("segmenter", m.get("model")) == "frangi" or "auc" not in m:
        text = "Vessel scores use the multiscale Frangi segmenter (no dataset with manual vessel masks)."
    else:
        text = ("Vessel scores use the pipeline's U-Net vessel segmenter, trained on the clean training images' "
                f"manual masks (first observer). On the clean test images, inside the FOV: AUC {rng('auc')}, Dice "
                f"{rng('dice')}; the Frangi segmenter on the same images: AUC {rng('frangi_auc')}, Dice "
                f"{rng('frangi_dice')}; the second observer against the first: Dice {rng('observer2_dice')} (mean, "
                "min-max over test images).")
    return ["## Vessel segmenter", "", text, ""], f"<h2>Vessel segmenter</h2><p>{html.escape(text)}</p>"


CONVERGENCE_TEXT = (
    "A trained model converged when its curve has at least 8 validation points, its best validation PSNR gained less "
    "than 0.2 dB over the last quarter of its steps and its last validation is within 0.2 dB of its best (a falling "
    "curve is no plateau: a GAN trading PSNR for its adversary, or a fine-tuning undoing its start), and, for a model "
    "fine-tuned from another or trained on another's outputs, when that one converged too. A decaying learning rate "
    "flattens the last quarter by itself: the verdict means no more gain at this schedule's length. A model that did "
    "not converge is marked in every table and figure and is never called best: its numbers describe the training "
    "budget, not the paper's method. A trained model whose mean PSNR inside the FOV on a test corruption is below the "
    "degraded input's failed there: it is marked, never called best, its claims there are failed, and it is never a "
    "task's champion."
)
