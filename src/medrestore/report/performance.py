"""The report's performance section: ``make bench``'s figures (speed and memory; machine-dependent),
rendered from the committed ``reports/bench.json`` so that the report's bytes depend on that file
only. ``benchmarks/bench.py`` writes the file and renders ``bench.md`` with the same :func:`sections`."""

from __future__ import annotations

import html

from medrestore.report.markup import html_table, md_table

Section = tuple[str, str, list[str], list[list[str]]]  # title, text, table header, table rows


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _inference(inf: dict) -> list[Section]:
    """Seconds per megapixel of each network: tiled or not, and each inference optimisation."""
    rows = []
    for m, r in inf["models"].items():
        rows.append(
            [
                m,
                str(r["untiled"]),
                str(r["tiled"]),
                f"{r['tiling_overhead']:+.1%}",
                _x(r["inference_mode_speedup"]),
                str(r.get("bn_folded", "–")),
                str(r["bn_folded_channels_last"]),
                _x(r["bn_folded_channels_last_speedup"]),
                f"{r['compiled']} ({r['compiled_vs_bn_folded_channels_last']:.2f}x)" if "compiled" in r else "–",
                str(r.get("compile_seconds", "–")),
            ]
        )
    return [(f"Inference, {inf['image_size']} px fundus image out, seconds per megapixel",
             f"Median of the runs; tiles of {inf['tile']} px with 32 px overlap (super-resolution networks: "
             "given the reduced image, tiles and overlap in its pixels). Kept: batch-norm folding + "
             "channels-last.",
             ["model", "untiled", "tiled", "tiling overhead", "no_grad / inference_mode", "BN folded",
              "BN folded + channels-last",
              "speed-up", "torch.compile (after compiling)", "compile s"], rows)]


def _baselines(base: dict) -> list[Section]:
    """Seconds per megapixel of each classical baseline."""
    return [(f"Classical baselines, {base['image_size']} px, seconds per megapixel", "", ["baseline", "s/MPix"],
             [[k, str(v)] for k, v in base["seconds_per_mpix"].items()])]


def _metrics(met: dict) -> list[Section]:
    """Images per second of each metric path."""
    return [(f"Metrics, {met['image_size']} px, images per second", met["note"], ["path", "images/s"],
             [[k, str(v)] for k, v in met["images_per_second"].items()])]


def _training(tr: dict) -> list[Section]:
    """Patches per second of the bare PyTorch loop and of the engine, and the engine's overhead."""
    rows = [[m, str(r["steps"] if "step_ms_median" in r else r.get("steps", "")),
             str(r["patches_per_second"]["bare"]),
             str(r["patches_per_second"]["ours"]), f"{r['engine_overhead_per_step']:+.1%}",
             f"{r['engine_overhead_per_step_mean']:+.1%}" if "engine_overhead_per_step_mean" in r else "–",
             str(r["engine_fixed_seconds"])]
            for m, r in tr["models"].items()]
    return [(f"Training, patches per second (batch {tr['batch']}, {tr['patch']} px, {tr.get('repeats', 1)} runs "
             "of each side)",
             f"Goal: engine overhead per step at most {tr['goal_overhead']:.0%}. {tr['note']}.",
             ["model", "steps per run", "bare PyTorch loop", "our engine", "overhead per step (median)",
              "(mean)", "fixed s per run"], rows)]


def _threads(th: dict) -> list[Section]:
    """Inference by torch thread count, then training steps by thread count and by loader workers."""
    ns = [str(n) for n in th["threads"]]
    out: list[Section] = []
    out.append((f"Threads, inference ({th['image_size']} px, kept path: BN folded + channels-last, median of "
                f"{th['repeats']}), seconds per megapixel",
                f"torch intra-op threads; default here {th['default_threads']}.",
                ["model", *(f"{n} thread(s)" for n in ns), "speed-up"],
                [[m, *(str(r[n]) for n in ns),
                  _x(r["speedup_max_vs_1"])] for m, r in th["inference_seconds_per_mpix"].items()]))
    ws = list(next(iter(th["training"].values()))["step_ms_by_workers"]) if th["training"] else []
    out.append((f"Threads and data loading, training (bare loop, batch {th['batch']}, {th['patch']} px, "
                f"{th['steps']} steps, median of {th.get('train_repeats', th['repeats'])} runs), ms per optimiser "
                "step",
                "Batch fetch = indexing and stacking one batch in the loop; sampler = drawing one batch's indices "
                f"at the default pipeline's {th['pipeline_patches']} training patches. Workers: batches through "
                "the engine's DataLoader.",
                ["model", *(f"{n} thread(s)" for n in ns), "batch fetch ms (share of a step)", "sampler ms",
                 *(f"{w} workers" for w in ws)],
                [[m, *(str(r["step_ms_by_threads"][n]) for n in ns),
                  f"{r['batch_fetch_ms']} ({r['batch_fetch_share']:.1%})",
                  str(r["sampler_ms_at_pipeline_size"]), *(str(r["step_ms_by_workers"][w]) for w in ws)]
                 for m, r in th["training"].items()]))
    return out


def _precision_inference(pr: dict) -> Section:
    """float32 against bf16 autocast at inference: speed and the bf16 output's fidelity."""
    return (
        f"Precision on {pr['device']}, inference ({pr['image_size']} px, kept path, median of "
        f"{pr['repeats']}), seconds per megapixel",
        "bf16 = torch.autocast(bfloat16). The networks are the pipeline's trained denoise-g25 models "
        "where present; they restore the test image with Gaussian noise (sigma 25): PSNR of the bf16 "
        "output against the float32 output, and of each against the clean image.",
        [
            "model",
            "weights",
            "float32",
            "bf16 autocast",
            "speed-up",
            "bf16 vs float32, dB",
            "vs clean: noisy / float32 / bf16, dB",
        ],
        [
            [
                m,
                "trained" if r.get("weights", "untrained") != "untrained" else "untrained",
                str(r["float32"]),
                str(r["bf16_autocast"]),
                _x(r["bf16_speedup"]),
                str(r["bf16_psnr_vs_float32_db"]),
                " / ".join(str(r["psnr_vs_clean_db"][k]) for k in ("noisy", "float32", "bf16_autocast"))
                if "psnr_vs_clean_db" in r
                else "–",
            ]
            for m, r in pr["inference"].items()
        ],
    )


def _precision(pr: dict) -> list[Section]:
    """32-true against bf16 at inference (:func:`_precision_inference`), then in training."""
    return [_precision_inference(pr),
            (f"Precision on {pr['device']}, training (our engine, batch {pr['batch']}, {pr['patch']} px, "
             f"{pr['steps']} steps, {pr['train_repeats']} run(s) each), ms per optimiser step (median)", "",
             ["model", "32-true", "bf16-mixed", "speed-up", "val PSNR 32-true", "val PSNR bf16-mixed"],
             [[m, str(r["step_ms"]["32-true"]), str(r["step_ms"]["bf16-mixed"]), _x(r["bf16_speedup"]),
               str(r["val_psnr"]["32-true"]),
               str(r["val_psnr"]["bf16-mixed"])] for m, r in pr["training"].items()])]


def _patchify(pa: dict) -> list[Section]:
    """Time and peak memory of patchify and corrupt at 1x and 4x the images (none without the 1x run)."""
    if "x1" not in pa:
        return []
    rows = [[stage, f"{k} ({pa[k]['images']})", str(pa[key]["patches"]), str(pa[key]["seconds"]),
             str(pa[key]["patches_per_second"]),
             f"{pa[key]['peak_rss_mib']:.0f}"]
            for stage, prefix in (("patchify", ""),
                                  ("corrupt", "corrupt_")) for k in ("x1", "x4") for key in [prefix + k]]
    p = pa["params"]
    return [(f"patchify and corrupt at 1x and 4x the images ({p['size']} px, {p['patch_size']} px patches, "
             f"stride {p['stride']})",
             "Each in a fresh process; peak RSS includes the interpreter and imports "
             f"({pa['imports_only']['peak_rss_mib']:.0f} MiB).",
             ["stage", "images", "patches", "seconds", "patches/s", "peak RSS MiB"], rows)]


def _dvc_noop(noop: dict) -> list[Section]:
    """The time of a ``dvc repro`` with nothing to do (none when it was not timed)."""
    if "seconds" not in noop:
        return []
    return [("dvc repro with nothing to do", f"Goal: under {noop['goal_seconds']} s.",
             ["seconds", "ran nothing"],
             [[str(noop["seconds"]), str(noop["ran_nothing"]).lower()]])]


#: Each section of ``bench.json`` the report shows, in order, and what renders it (as zero or more tables).
_RENDERERS = (("inference", _inference), ("baselines", _baselines), ("metrics", _metrics), ("training", _training),
              ("threads", _threads), ("precision", _precision), ("patchify", _patchify), ("dvc_noop", _dvc_noop))


def sections(result: dict) -> list[Section]:
    """The benchmark as titled tables, for ``bench.md`` and the report's performance section: each section
    of ``result`` in :data:`_RENDERERS`' order, then a line for each of patchify and dvc_noop skipped or failed."""
    out: list[Section] = []
    for key, render in _RENDERERS:
        part = result.get(key)
        if part:
            out += render(part)
    # The whole-pipeline time of ``make bench``'s repro section is a dated record of the commit it ran on
    # (reports/bench.md, benchmarks/results/): the report does not restate it, since its commit is not this one.
    for key in ("patchify", "dvc_noop"):
        r = result.get(key)
        if r and ("skipped" in r or "failed" in r):
            out.append((key, str(r.get("skipped") or r.get("failed")), [], []))
    return out


def performance_section(bench: dict, source: str) -> tuple[list[str], str]:
    """The Markdown lines and the HTML of the section, from ``bench.json``'s content read from ``source``."""
    intro = (f"From `{source}` (`make bench`), mode: {bench.get('mode', '?')}; machine: "
             f"{bench.get('machine', {}).get('cpu_count', '?')} CPU cores, torch "
             f"{bench.get('machine', {}).get('torch', '?')}, GPU: {bench.get('machine', {}).get('cuda') or 'none'}.")
    md = ["## Performance", "", intro, ""]
    parts = [f"<h2 id='performance'>Performance</h2><p>{html.escape(intro)}</p>"]
    for title, text, header, rows in sections(bench):
        md += [f"### {title}", ""] + ([text, ""] if text else [])
        parts.append(f"<h3>{html.escape(title)}</h3>" + (f"<p>{html.escape(text)}</p>" if text else ""))
        if header and rows:
            md += md_table(header, rows)
            parts.append(html_table(header, rows))
    return md, "".join(parts)
