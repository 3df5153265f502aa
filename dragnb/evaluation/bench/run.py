"""The bench's run: edit every planned sample (or score given results) and write one record per edit."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from .. import metrics
from ...errors import DragnbError, InputError
from .outputs import _finite, _write_json, write_outputs
from .plan import (RECORD, RESULT_IMAGE, BenchConfig, BenchOptions, PlannedEdit, Skipped, _digest, _file_digest,
                   Checked, _process_layout, _result_folder, check, model_fingerprint, seeded)
from .summary import build_summary

def run_bench(opts: BenchOptions, checked: Checked | None = None) -> dict | None:
    """Run (or resume) the benchmark and write its outputs; returns the summary (None on a shard that did not
    see every record finished). ``checked``: :func:`~.plan.check`'s record when the caller has made it already."""
    tick = time.perf_counter()
    c = checked or check(opts)
    out, dift, configs, samples, skipped = c.out, c.dift, c.configs, c.samples, c.skipped
    model_name, base, config_settings = c.model_name, c.base, c.config_settings
    rank, world, device, via_accelerate = _process_layout(opts)
    if device is not None:
        from ...models import resolve_device

        device = str(resolve_device(device, "--device"))
    metric_info = {"mean_distance": opts.mean_distance, "image_fidelity": opts.fidelity,
                   "dift": dataclasses.asdict(dift) if opts.mean_distance else None}

    fingerprints = {"model": model_fingerprint(model_name),
                    "dift_model": model_fingerprint(dift.model) if opts.mean_distance else None}

    def digest(config: BenchConfig, seed: int, sample_digest: str) -> str:
        return _digest([model_name, fingerprints, seeded(config_settings[config.name], seed).to_dict(), metric_info,
                        sample_digest])

    plan: list[PlannedEdit] = []  # sample-major, so a sample's LoRA, inversion and DIFT features stay warm
    for index, (ref, sample) in enumerate(samples):
        data_digest = _file_digest(ref.folder / "original_image.png", ref.folder / "meta_data.pkl", *(
            [Path(opts.score) / ref.category / ref.name / RESULT_IMAGE] if opts.score is not None else []))
        for seed in opts.seeds:
            for config in configs:
                plan.append(PlannedEdit(index, ref, sample, config, seed,
                                        _result_folder(out, config, seed, ref, len(configs)),
                                        digest(config, seed, data_digest)))

    mine = [edit for edit in plan if edit.index % world == rank]
    todo = [edit for edit in mine if not edit.finished()]
    stats = {"planned": len(mine), "resumed": len(mine) - len(todo), "run": 0, "seconds": 0.0}
    if todo and not opts.merge_only:
        _run_items(todo, opts, model_name, configs, config_settings, dift, device, out, stats, rank, world)

    if via_accelerate and rank == 0:  # wait for the other processes' records (no barrier: runs may be long)
        while not all(edit.finished() for edit in plan):
            time.sleep(1.0)
    if not all(edit.finished() for edit in plan):
        if rank != 0 or world > 1:
            return None
        missing = [str(edit.folder) for edit in plan if not edit.finished()]
        raise InputError("--merge-only", f"{len(missing)} edits have no finished record yet (first: {missing[0]}); "
                         "run without --merge-only to do them")
    if world > 1 and via_accelerate and rank != 0:
        return None
    summary = build_summary(plan, configs, config_settings, opts, model_name, base, fingerprints, metric_info,
                            skipped, samples, world, stats, time.perf_counter() - tick)
    write_outputs(out, summary, plan)
    return summary


def _run_items(todo, opts, model_name, configs, config_settings, dift, device, out, stats, rank, world) -> None:
    """Edit and score every planned item of this process, writing one record per item."""
    import torch
    from PIL import Image
    from tqdm import tqdm

    from ...errors import ModelError
    from ...images import to_rgb_array
    from ...models import load_model
    from ...session import DragSession

    featurizer = fidelity_net = None
    if opts.fidelity:  # first: a missing optional dependency should stop the run before anything is loaded
        fidelity_net = metrics.lpips_alex(device=device)
    weights = next(iter(config_settings.values())).compute.weights  # one for all configs (checked in run)
    model = load_model(opts.model, device=device, dtype=weights, offline=opts.offline) if opts.score is None else None
    if opts.mean_distance:  # always its own copy of the weights: the edit's LoRA must not leak into the metric
        try:
            dift_model = load_model(dift.model, device=device, offline=opts.offline)
        except ModelError as exc:
            raise ModelError(f"{exc}. Mean Distance features come from {dift.model!r} (the protocol uses "
                             f"{metrics.SD21}); offline, pass --dift-model embedded (or a local folder), or "
                             "--no-mean-distance") from None
        featurizer = metrics.DiftFeaturizer(dift_model, dift)
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else out / "cache"
    bar = tqdm(total=len(todo), desc=f"bench[{rank}/{world}]" if world > 1 else "bench", unit="edit",
               disable=not opts.progress, position=rank, dynamic_ncols=True)
    session = source_features = current = None
    try:
        for _, ref, sample, config, seed, folder, key in todo:
            if opts.score is not None:  # score a result made elsewhere
                path = Path(opts.score) / ref.category / ref.name / RESULT_IMAGE
                dragged = to_rgb_array(path, str(path))
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(dragged).save(folder / RESULT_IMAGE)
                source_features = None if ref.key != current else source_features
                if featurizer is not None and source_features is None:
                    source_features = featurizer(sample.image, sample.prompt, torch.Generator().manual_seed(dift.seed))
                current = ref.key
                record = {"sample": ref.key, "category": ref.category, "name": ref.name, "seed": seed,
                          "config": config.name, "assignments": [], "digest": key, "seconds": 0.0,
                          "metrics": score(sample, dragged, None, featurizer, fidelity_net, dift.seed, source_features),
                          "edit": {"points": sample.points.as_list(), "scored_from": str(path)}}
                _write_json(folder / RECORD, record)
                stats["run"] += 1
                bar.update(1)
                continue
            if ref.key != current:  # a new sample: new session (its LoRA/inversion come from the disk cache)
                current = ref.key
                session = DragSession(model, sample.image, sample.prompt, config_settings[config.name],
                                      cache_dir=cache_dir)
                session.set_points(sample.points)
                session.mask = sample.mask
                source_features = None
                if featurizer is not None:
                    source_features = featurizer(sample.image, sample.prompt, torch.Generator().manual_seed(dift.seed))
            session.settings = seeded(config_settings[config.name], seed)
            bar.set_postfix_str(f"{ref.key} seed {seed}" + (f" {config.name}" if len(configs) > 1 else ""))
            t0 = time.perf_counter()
            folder.mkdir(parents=True, exist_ok=True)
            record = {"sample": ref.key, "category": ref.category, "name": ref.name, "seed": seed,
                      "config": config.name, "assignments": list(config.assignments), "digest": key}
            try:
                result = session.run()
            except DragnbError as exc:
                record["failed"] = str(exc)
                _write_json(folder / RECORD, record)
                bar.update(1)
                continue
            edit_record = result.to_record()
            if any(edit_record["interrupted"].values()):  # Ctrl-C inside a stage: keep nothing half-done
                raise KeyboardInterrupt
            Image.fromarray(result.image).save(folder / RESULT_IMAGE)
            record["metrics"] = score(sample, result.image, result.final_handles_xy, featurizer, fidelity_net,
                                      dift.seed, source_features)
            record["seconds"] = time.perf_counter() - t0
            record["edit"] = edit_record
            _write_json(folder / RECORD, record)
            stats["run"] += 1
            stats["seconds"] += record["seconds"]
            bar.update(1)
    finally:
        bar.close()


def score(sample, dragged: np.ndarray, tracked_xy, featurizer, fidelity_net, dift_seed: int = 42,
          source_features=None) -> dict:
    """All metrics of one edited sample: Mean Distance and masked Mean Distance (per pair), Image Fidelity,
    DAI at every γ of :data:`dragnb.evaluation.metrics.DAI_GAMMAS` (per pair and their mean), known answers if any.

    MD and masked MD share one featurization of the result. Masked MD searches inside ``sample.mask``; a
    sample without one (whole image editable) gets the plain MD values, with ``masked_search`` "whole image".
    DAI needs no network and is always computed.
    """
    targets = sample.points.targets
    handles = sample.points.handles
    out: dict = {"mean_distance": None, "distances": None, "matched_xy": None, "image_fidelity": None,
                 "masked_mean_distance": None, "masked_distances": None, "masked_matched_xy": None,
                 "masked_search": None}
    if featurizer is not None:
        import torch

        if source_features is None:
            source_features = featurizer(sample.image, sample.prompt, torch.Generator().manual_seed(dift_seed))
        dragged_features = featurizer(metrics.resize_like(dragged, sample.image), sample.prompt,
                                      torch.Generator().manual_seed(dift_seed))
        md = metrics.mean_distance(sample.image, dragged, handles, targets, sample.prompt, featurizer, dift_seed,
                                   source_features, dragged_features=dragged_features)
        out.update(mean_distance=md.mean, distances=md.distances, matched_xy=[list(p) for p in md.matched_xy])
        mmd = metrics.mean_distance(sample.image, dragged, handles, targets, sample.prompt, featurizer, dift_seed,
                                    source_features, mask=sample.mask, dragged_features=dragged_features)
        out.update(masked_mean_distance=mmd.mean, masked_distances=mmd.distances,
                   masked_matched_xy=[list(p) for p in mmd.matched_xy],
                   masked_search="mask" if mmd.masked else "whole image")
    dai_pairs = {str(g): metrics.dai_per_pair(sample.image, dragged, handles, targets, g).tolist()
                 for g in metrics.DAI_GAMMAS}
    out["dai"] = {g: float(np.mean(v)) if v else None for g, v in dai_pairs.items()}
    out["dai_pairs"] = dai_pairs
    if fidelity_net is not None:
        out["image_fidelity"] = metrics.image_fidelity(sample.image, dragged, fidelity_net)
    if tracked_xy is not None:  # where the method's own point tracking believes the handles ended
        out["tracked_distance"] = [float(d) for d in np.linalg.norm(np.asarray(tracked_xy) - targets, axis=1)]
    known = metrics.known_answer_scores(sample.folder, dragged)
    if known is not None:
        known["placement_error_px"] = _finite(known["placement_error_px"])
        known["placement_error_fraction"] = _finite(known["placement_error_fraction"])
    out["known_answer"] = known
    return out


