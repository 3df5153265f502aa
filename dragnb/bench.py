"""The evaluation harness: ``python -m dragnb bench`` runs DragBench-shaped data through DragSession and scores it.

Input is a DragBench tree: ``DATA/<category>/<sample>/{original_image.png, meta_data.pkl}`` (sample folders
directly under ``DATA`` also work; their category is the folder's name). Malformed samples are skipped with
a message naming the file, and counted. Output::

    RUN/summary.json          every setting, versions, seeds, per-category and overall metrics (mean ± std over seeds)
    RUN/pairs.csv             one row per handle/target pair, seed and setting
    RUN/md_vs_fidelity.png    Mean Distance against Image Fidelity, the papers' plot
    RUN/sweep.csv, sweep.md, sweep.png    (with --sweep) one row/point per setting of the grid
    RUN/[<setting>/]seed_<s>/<category>/<sample>/dragged_image.png + record.json   (DragBench result tree)
    RUN/cache/                LoRA and inversion per sample (DragSession's disk cache), shared by seeds and settings

A finished edit (its ``record.json`` with the same settings digest) is never redone, so an interrupted run
resumes where it stopped. Seed s adds s to ``lora.seed`` and ``drag.seed`` (seed 0 = the reference's 0 and 42);
the metrics' own seed (DIFT noise) stays fixed. Under ``accelerate launch`` each process takes every n-th
sample and process 0 merges all records into one summary; ``--shard K/N`` does the same by hand.
``--score RESULTS`` scores another method's result tree (``RESULTS/<category>/<sample>/dragged_image.png``)
with the same metrics instead of editing.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import metrics
from .errors import DragnbError, InputError
from .files import writable_folder, write_atomic

RECORD = "record.json"
RESULT_IMAGE = "dragged_image.png"
HIDDEN = (".", "_")  # .DS_Store, .ipynb_checkpoints, __pycache__
PACKAGES = ("dragnb", "torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "numpy", "pillow",
            "matplotlib", "lpips", "torchvision")


# ------------------------------------------------------------------------------------------------ data in
@dataclass(frozen=True)
class SampleRef:
    """Where one sample lives: ``DATA/<category>/<name>/``."""

    category: str
    name: str
    folder: Path

    @property
    def key(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass(frozen=True)
class Skipped:
    """A sample folder that could not be used, and why (the message names the file at fault)."""

    path: str
    reason: str


def _is_sample(folder: Path) -> bool:
    return (folder / "original_image.png").exists() or (folder / "meta_data.pkl").exists()


def discover(data_dir: str | Path) -> tuple[list[SampleRef], list[Skipped]]:
    """Sample folders of a DragBench tree, sorted by category then name, plus folders that hold no sample."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError("--data", f"no folder at {str(root)!r}; give a DragBench tree (category folders of sample "
                         "folders holding original_image.png and meta_data.pkl)")
    refs, skipped = [], []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(HIDDEN)):
        if _is_sample(child):  # a flat tree: samples directly under DATA
            refs.append(SampleRef(root.name, child.name, child))
            continue
        for folder in sorted(p for p in child.iterdir() if p.is_dir() and not p.name.startswith(HIDDEN)):
            if _is_sample(folder):
                refs.append(SampleRef(child.name, folder.name, folder))
            else:
                skipped.append(Skipped(str(folder), "holds neither original_image.png nor meta_data.pkl"))
    if not refs:
        raise InputError("--data", f"found no sample folders in {str(root)!r}; expected "
                         "<category>/<sample>/original_image.png + meta_data.pkl")
    return refs, skipped


def load_samples(refs: list[SampleRef]):
    """Read every sample (:func:`dragnb.dragbench.read_sample`); malformed ones become :class:`Skipped`."""
    from .dragbench import read_sample

    good, skipped = [], []
    for ref in refs:
        try:
            good.append((ref, read_sample(ref.folder)))
        except DragnbError as exc:
            skipped.append(Skipped(str(ref.folder), str(exc)))
        except Exception as exc:  # noqa: BLE001 - one odd sample must never stop a benchmark
            skipped.append(Skipped(str(ref.folder), f"unreadable sample ({exc.__class__.__name__}: {exc})"))
    return good, skipped


# ------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class BenchConfig:
    """One point of the settings grid: its name and the ``--sweep`` assignments that make it."""

    name: str
    assignments: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        return "__".join("".join(c if c.isalnum() or c in "._=-" else "_" for c in a) for a in self.assignments)


def parse_sweeps(sweeps: list[str]) -> list[BenchConfig]:
    """``["drag.lr=0.01,0.03", "inversion.strength=0.6,0.7"]`` → the grid of 4 configs (values split on ``|``
    when one is present, so tuple values can be swept: ``drag.feature_blocks=-2|-2,-1``)."""
    if not sweeps:
        return [BenchConfig("base")]
    axes = []
    for item in sweeps:
        key, sep, values = item.partition("=")
        if not sep or "." not in key or not values.strip():
            raise InputError("--sweep", f"expected stage.field=v1,v2,... (e.g. drag.lr=0.01,0.03), got {item!r}")
        parts = [v.strip() for v in values.split("|" if "|" in values else ",") if v.strip()]
        axes.append([f"{key.strip()}={v}" for v in parts])
    return [BenchConfig(" ".join(combo), tuple(combo)) for combo in itertools.product(*axes)]


def split_overrides(assignments: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``dift.*`` (metric) assignments from the method's stage settings."""
    dift = [a for a in assignments if a.strip().startswith("dift.")]
    return [a for a in assignments if a not in dift], dift


def seeded(settings, seed: int):
    """Settings for run seed ``seed``: LoRA and drag seeds offset by it (seed 0 leaves them as they are)."""
    return dataclasses.replace(settings, lora=dataclasses.replace(settings.lora, seed=settings.lora.seed + seed),
                               drag=dataclasses.replace(settings.drag, seed=settings.drag.seed + seed))


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise InputError("--seeds", f"expected integers separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError("--seeds", f"give at least one seed and no repeats, got {text!r}")
    return seeds


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def model_fingerprint(name: str) -> str:
    """Identify a model folder's weights cheaply (size plus the first and last MiB of every file), so a
    retrained model is never mistaken for the one that produced earlier records; hub ids stand for themselves."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return name
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.relative_to(path)}:{size}".encode())
        with open(f, "rb") as handle:
            h.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                h.update(handle.read())
    return h.hexdigest()[:16]


def versions() -> dict[str, str | None]:
    """Versions of Python, the packages that shape the numbers, and the git commit of this checkout."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, text=True,
                                           capture_output=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


# ------------------------------------------------------------------------------------------------ options
@dataclass
class BenchOptions:
    """Everything one benchmark run depends on (the command line fills it; notebooks may build it)."""

    data: str | Path
    out: str | Path
    model: str | None = None  # hub id or folder; None = the embedded model
    overrides: list[str] = field(default_factory=list)  # stage.field=value, and dift.field=value for the metric
    seeds: list[int] = field(default_factory=lambda: [0])
    sweeps: list[str] = field(default_factory=list)  # stage.field=v1,v2 (grid over all of them)
    dift_model: str | None = None  # None = the protocol's SD 2.1; "same" = the edited model; "embedded"
    fidelity: bool = True  # 1 - LPIPS (needs the optional lpips package and AlexNet weights)
    mean_distance: bool = True
    device: str | None = None
    offline: bool | None = None
    cache_dir: str | Path | None = None  # default RUN/cache
    limit: int | None = None  # first N usable samples only (sorted by category, then name)
    categories: list[str] | None = None
    shard: tuple[int, int] | None = None  # (k, n): this process takes samples k, k + n, ...
    progress: bool = True
    merge_only: bool = False
    score: str | Path | None = None  # score this result tree's dragged_image.png files instead of editing


# ------------------------------------------------------------------------------------------------ running
class PlannedEdit(NamedTuple):
    """One edit of the run: a sample under one setting of the grid and one seed, and where its result goes."""

    index: int  # the sample's position in the sorted list (process k of n takes index % n == k)
    ref: SampleRef
    sample: object  # dragnb.dragbench.Sample
    config: BenchConfig
    seed: int
    folder: Path  # RUN/[<setting>/]seed_<s>/<category>/<sample>/
    digest: str  # of everything the result depends on; a record with another digest is redone

    def finished(self) -> bool:
        """True when a record with this digest exists (a failed edit counts: its failure is the result)."""
        try:
            record = json.loads((self.folder / RECORD).read_text())
        except (OSError, ValueError):
            return False
        return record.get("digest") == self.digest and bool(record.get("failed")
                                                              or (self.folder / RESULT_IMAGE).is_file())

    def record(self) -> dict:
        return json.loads((self.folder / RECORD).read_text())


def _result_folder(out: Path, config: BenchConfig, seed: int, ref: SampleRef, n_configs: int) -> Path:
    base = out / config.folder if n_configs > 1 else out
    return base / f"seed_{seed}" / ref.category / ref.name


def _write_json(path: Path, data) -> None:
    """Write atomically (a crash never leaves half a record that resume would trust)."""
    text = json.dumps(_clean(data), indent=1, default=_json_default, allow_nan=False)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj):
    """Recursively replace NaN and infinities (which JSON lacks) by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _finite(x):
    """JSON has no NaN or infinity: such values become None."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


LAUNCHER_WORLD_SIZE = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")  # torchrun, MPI


def _process_layout(opts: BenchOptions):
    """(rank, world, device, via_accelerate) from ``accelerate launch``'s environment or ``--shard``."""
    world_env = max(int(os.environ.get(k, "1") or 1) for k in LAUNCHER_WORLD_SIZE)
    if world_env > 1:
        if opts.shard is not None:
            raise InputError("--shard", "do not combine --shard with accelerate launch; the launcher splits the work")
        import torch
        from accelerate import PartialState

        # Without CUDA, accelerate only forms a multi-process group when told to use the CPU.
        state = PartialState(cpu=opts.device == "cpu" or not torch.cuda.is_available())
        if state.num_processes != world_env:
            raise InputError("accelerate launch", f"the launcher started {world_env} processes but accelerate "
                             f"formed a group of {state.num_processes} ({state.distributed_type}); on a machine "
                             "without GPUs launch CPU processes with "
                             "`accelerate launch --multi_gpu --num_processes N -m dragnb bench ...` "
                             "(accelerate's --cpu flag alone starts one process unless MPI is set up)")
        device = opts.device or (str(state.device) if state.device.type != "cpu" else None)
        return state.process_index, state.num_processes, device, True
    if opts.shard is not None:
        return opts.shard[0], opts.shard[1], opts.device, False
    return 0, 1, opts.device, False


def run_bench(opts: BenchOptions) -> dict | None:
    """Run (or resume) the benchmark and write its outputs; returns the summary (None on a shard that did not
    see every record finished)."""
    tick = time.perf_counter()
    out = writable_folder(opts.out, "--out")
    stage_overrides, dift_overrides = split_overrides(opts.overrides)
    configs = parse_sweeps(opts.sweeps)
    for config in configs:
        if split_overrides(list(config.assignments))[1]:
            raise InputError("--sweep", "sweep the method's settings, not the metric's (dift.*)")
    try:
        dift = metrics.parse_dift_overrides(metrics.DiftSettings(), dift_overrides)
    except ValueError as exc:
        raise InputError("--set", str(exc)) from None
    if opts.dift_model is not None:
        from .models import EMBEDDED_MODEL

        name = {"embedded": str(EMBEDDED_MODEL), "same": opts.model or str(EMBEDDED_MODEL)}.get(opts.dift_model,
                                                                                                   opts.dift_model)
        dift = dataclasses.replace(dift, model=name)

    refs, skipped = discover(opts.data)
    if opts.categories:
        refs = [r for r in refs if r.category in opts.categories]
    samples, bad = load_samples(refs)
    skipped += bad
    if opts.limit is not None:
        samples = samples[:opts.limit]
    if opts.score is not None:  # another method's results: one dragged image per sample, nothing to edit
        if opts.sweeps or len(opts.seeds) != 1:
            raise InputError("--score", "scoring a result tree takes no --sweep and one seed (it holds one result "
                             "per sample)")
        results = {ref.key: Path(opts.score) / ref.category / ref.name / RESULT_IMAGE for ref, _ in samples}
        skipped += [Skipped(str(results[ref.key]), f"no {RESULT_IMAGE} in the result tree for {ref.key}")
                    for ref, _ in samples if not results[ref.key].is_file()]
        samples = [(ref, sample) for ref, sample in samples if results[ref.key].is_file()]
    rank, world, device, via_accelerate = _process_layout(opts)
    if device is not None:
        from .models import resolve_device

        device = str(resolve_device(device, "--device"))
    if opts.cache_dir is not None:
        from .cache import open_cache

        open_cache(opts.cache_dir, "--cache-dir")

    # Settings: the model's own defaults, then --set, then each sweep point, then each seed.
    from .config import apply_overrides, model_defaults
    from .models import EMBEDDED_MODEL

    model_name = str(EMBEDDED_MODEL if opts.model is None else opts.model) if opts.score is None \
        else f"results in {opts.score}"
    local = Path(model_name).expanduser()
    try:
        base = apply_overrides(model_defaults(local if local.is_dir() else None), stage_overrides)
        config_settings = {c.name: apply_overrides(base, list(c.assignments)) for c in configs}
    except InputError:  # names the setting at fault already
        raise
    except ValueError as exc:
        raise InputError("--set/--sweep", str(exc)) from None
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

    from .errors import ModelError
    from .images import to_rgb_array
    from .models import load_model
    from .session import DragSession

    featurizer = fidelity_net = None
    if opts.fidelity:  # first: a missing optional dependency should stop the run before anything is loaded
        fidelity_net = metrics.lpips_alex(device=device)
    model = load_model(opts.model, device=device, offline=opts.offline) if opts.score is None else None
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
    DAI at every γ of :data:`dragnb.metrics.DAI_GAMMAS` (per pair and their mean), known answers if any.

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


# ------------------------------------------------------------------------------------------------ summary
def _stats(values: list[float | None]) -> dict:
    """Mean ± sample std (ddof 1; None with one value) over seeds, plus the values themselves."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "per_seed": values}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "per_seed": values}


def _group_metrics(records: list[dict]) -> dict:
    """Metrics of a group of one seed's records. MD and masked MD: mean over all pairs (as DragDiffusion's and
    DragLoRA's scripts). IF and DAI_γ: mean over samples (DAI as GoodDrag's script: per-image values averaged)."""
    ok = [r for r in records if "metrics" in r]
    dists = [d for r in ok for d in (r["metrics"]["distances"] or [])]
    fid = [r["metrics"]["image_fidelity"] for r in ok if r["metrics"]["image_fidelity"] is not None]
    tracked = [d for r in ok for d in (r["metrics"].get("tracked_distance") or [])]
    masked = [d for r in ok for d in (r["metrics"].get("masked_distances") or [])]
    out = {"n_samples": len(ok), "n_failed": len(records) - len(ok), "n_pairs": sum(len(r["edit"]["points"]) // 2
                                                                                    for r in ok),
           "mean_distance": float(np.mean(dists)) if dists else None,
           "image_fidelity": float(np.mean(fid)) if fid else None,
           "tracked_distance": float(np.mean(tracked)) if tracked else None,
           "masked_mean_distance": float(np.mean(masked)) if masked else None}
    for gamma in metrics.DAI_GAMMAS:  # GoodDrag: the per-image DAI, averaged over images
        per_image = [(r["metrics"].get("dai") or {}).get(str(gamma)) for r in ok]
        per_image = [v for v in per_image if v is not None]
        out[f"dai_{gamma}"] = float(np.mean(per_image)) if per_image else None
    known = [r["metrics"]["known_answer"] for r in ok if r["metrics"].get("known_answer")]
    if known:
        errors = [k["placement_error_px"] for k in known if k["placement_error_px"] is not None]
        out["known_answer"] = {
            "n": len(known), "vanished": len(known) - len(errors),
            "placement_error_px": float(np.mean(errors)) if errors else None,
            "median_placement_error_px": float(np.median(errors)) if errors else None,
            "psnr_outside_mask": float(np.mean([k["psnr_outside_mask"] for k in known])),
            "success_rate": float(np.mean([k["success"] for k in known]))}
    return out


DAI_KEYS = tuple(f"dai_{g}" for g in metrics.DAI_GAMMAS)  # dai_1, dai_5, dai_10, dai_20
METRIC_KEYS = ("mean_distance", "image_fidelity", "tracked_distance", "masked_mean_distance", *DAI_KEYS)
KNOWN_KEYS = ("placement_error_px", "median_placement_error_px", "psnr_outside_mask", "success_rate")


def _over_seeds(per_seed: dict[int, dict]) -> dict:
    seeds = sorted(per_seed)
    out = {k: _stats([per_seed[s].get(k) for s in seeds]) for k in METRIC_KEYS}
    if any("known_answer" in per_seed[s] for s in seeds):
        out["known_answer"] = {k: _stats([(per_seed[s].get("known_answer") or {}).get(k) for s in seeds])
                               for k in KNOWN_KEYS}
    return out


def summarise_records(records: list[dict], seeds: list[int]) -> dict:
    """Per-seed, per-category and overall metrics, then mean ± std over seeds.

    Overall IF is the mean of the category means and overall MD the mean over all pairs, as the reference
    scripts compute them.
    """
    categories = sorted({r["category"] for r in records})
    per_seed: dict = {}
    for seed in seeds:
        mine = [r for r in records if r["seed"] == seed]
        cats = {c: _group_metrics([r for r in mine if r["category"] == c]) for c in categories}
        overall = _group_metrics(mine)
        cat_if = [m["image_fidelity"] for m in cats.values() if m["image_fidelity"] is not None]
        overall["image_fidelity"] = float(np.mean(cat_if)) if cat_if else None
        per_seed[seed] = {"overall": overall, "categories": cats}
    return {"overall": _over_seeds({s: per_seed[s]["overall"] for s in seeds}),
            "categories": {c: _over_seeds({s: per_seed[s]["categories"][c] for s in seeds}) for c in categories},
            "per_seed": {str(s): v for s, v in per_seed.items()}}


def build_summary(plan, configs, config_settings, opts, model_name, base, fingerprints, metric_info, skipped,
                  samples, world, stats, seconds) -> dict:
    """summary.json's content, from the records on disk (so every process, or a later merge, agrees)."""
    records = {}
    for edit in plan:
        records.setdefault(edit.config.name, []).append(edit.record())
    edit_seconds = [r["seconds"] for rs in records.values() for r in rs if "seconds" in r]
    failed = [{"sample": r["sample"], "seed": r["seed"], "config": r["config"], "reason": r["failed"]}
              for rs in records.values() for r in rs if r.get("failed")]
    return {
        "command": "python -m dragnb " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None,
        "data": str(opts.data), "model": model_name, "model_fingerprints": fingerprints, "seeds": list(opts.seeds),
        "seed_rule": "seed s adds s to lora.seed and drag.seed; the metric's DIFT seed stays fixed",
        "metrics": {**metric_info, "image_fidelity_definition": "1 - LPIPS(alex), both images bilinear to 224x224",
                    "mean_distance_definition": "DIFT cosine argmax over the whole result, distance to target in "
                                                "source-image pixels, mean over pairs",
                    "masked_mean_distance_definition": "as mean_distance, the argmax searched only inside the "
                                                       "sample's editable mask (DragLoRA's m-MD); no mask = the "
                                                       "whole image, = mean_distance",
                    "dai_gammas": list(metrics.DAI_GAMMAS),
                    "dai_definition": "GoodDrag's DAI_gamma: per pair, sum over the (1+2 gamma)^2 patch and RGB of "
                                      "(source around handle - result around target)^2, images in [0, 1], divided "
                                      "by the patch's pixel count (patches cut to the image at borders); mean over "
                                      "pairs per image, then over images"},
        "settings": base.to_dict() if opts.score is None else None,
        "scored_results": None if opts.score is None else str(opts.score),
        "configs": [{"name": c.name, "assignments": list(c.assignments), "folder": c.folder or ".",
                     "settings": config_settings[c.name].to_dict() if opts.score is None else None}
                    for c in configs],
        "versions": versions(),
        "samples": {"used": len(samples), "skipped": len(skipped),
                    "skipped_reasons": [dataclasses.asdict(s) for s in skipped],
                    "categories": sorted({ref.category for ref, _ in samples})},
        "failed": failed,
        "processes": world,
        "timing": {"wall_seconds_this_process": seconds, "edits_run_by_this_process": stats["run"],
                   "edits_resumed": stats["resumed"], "edit_seconds_this_process": stats["seconds"],
                   "mean_seconds_per_edit": float(np.mean(edit_seconds)) if edit_seconds else None},
        "results": {c.name: summarise_records(records[c.name], list(opts.seeds)) for c in configs},
    }


# ------------------------------------------------------------------------------------------------ outputs
PAIR_COLUMNS = ("config", "seed", "category", "sample", "pair", "handle_x", "handle_y", "target_x", "target_y",
                "matched_x", "matched_y", "distance", "image_fidelity", "tracked_x", "tracked_y", "tracked_distance",
                "drag_steps", "stop_reason", "placement_error_px", "psnr_outside_mask", "seconds",
                "masked_matched_x", "masked_matched_y", "masked_distance", *DAI_KEYS)


def pair_rows(plan) -> list[dict]:
    """One row per handle/target pair of every finished edit."""
    rows = []
    for edit in plan:
        r = edit.record()
        if "metrics" not in r:
            continue
        m, e = r["metrics"], r["edit"]
        pts = e["points"]
        known = m.get("known_answer") or {}
        masked_xy, masked_d, dai_pairs = m.get("masked_matched_xy"), m.get("masked_distances"), m.get("dai_pairs") or {}
        for i in range(len(pts) // 2):
            row = {"config": r["config"], "seed": r["seed"], "category": r["category"], "sample": r["name"],
                   "pair": i, "handle_x": pts[2 * i][0], "handle_y": pts[2 * i][1],
                   "target_x": pts[2 * i + 1][0], "target_y": pts[2 * i + 1][1],
                   "matched_x": m["matched_xy"][i][0] if m["matched_xy"] else None,
                   "matched_y": m["matched_xy"][i][1] if m["matched_xy"] else None,
                   "distance": m["distances"][i] if m["distances"] else None,
                   "image_fidelity": m["image_fidelity"],
                   "tracked_x": e["final_handles_xy"][i][0] if "final_handles_xy" in e else None,
                   "tracked_y": e["final_handles_xy"][i][1] if "final_handles_xy" in e else None,
                   "tracked_distance": (m.get("tracked_distance") or [None] * (i + 1))[i],
                   "drag_steps": e.get("drag_steps"), "stop_reason": e.get("stop_reason"),
                   "placement_error_px": known.get("placement_error_px"),
                   "psnr_outside_mask": known.get("psnr_outside_mask"), "seconds": round(r["seconds"], 3),
                   "masked_matched_x": masked_xy[i][0] if masked_xy else None,
                   "masked_matched_y": masked_xy[i][1] if masked_xy else None,
                   "masked_distance": masked_d[i] if masked_d else None}
            row.update({f"dai_{g}": (dai_pairs.get(str(g)) or [None] * (i + 1))[i] for g in metrics.DAI_GAMMAS})
            rows.append(row)
    return rows


def write_outputs(out: Path, summary: dict, plan) -> None:
    """summary.json, pairs.csv, md_vs_fidelity.png, and with a sweep sweep.csv, sweep.md, sweep.png."""
    _write_json(out / "summary.json", summary)
    with open(out / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PAIR_COLUMNS)
        writer.writeheader()
        writer.writerows(pair_rows(plan))
    fig = plot_md_vs_fidelity(summary)
    fig.savefig(out / "md_vs_fidelity.png", dpi=110, bbox_inches="tight")
    if len(summary["configs"]) > 1:
        rows = sweep_table(summary)
        with open(out / "sweep.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out / "sweep.md").write_text(markdown_table(rows))
        plot_sweep(summary).savefig(out / "sweep.png", dpi=110, bbox_inches="tight")


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    std = stat.get("std")
    return f"{stat['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _added_columns(res: dict) -> dict:
    """Masked MD and DAI_γ of one summary block, formatted (``.get``: summaries written before they existed)."""
    return {"masked_mean_distance": _fmt(res.get("masked_mean_distance"), 2),
            **{key: _fmt(res.get(key), 4) for key in DAI_KEYS}}


def sweep_table(summary: dict) -> list[dict]:
    """One row per setting of the grid: its assignments and mean ± std of the overall metrics (MD, IF, tracked
    distance, masked MD, DAI_γ, and the known answers when there are any)."""
    rows = []
    for config in summary["configs"]:
        res = summary["results"][config["name"]]["overall"]
        row = {a.partition("=")[0]: a.partition("=")[2] for a in config["assignments"]}
        row.update({"mean_distance": _fmt(res["mean_distance"], 2), "image_fidelity": _fmt(res["image_fidelity"]),
                    "tracked_distance": _fmt(res["tracked_distance"], 2)})
        row.update(_added_columns(res))
        if "known_answer" in res:
            row.update({"placement_error_px": _fmt(res["known_answer"]["placement_error_px"], 2),
                        "success_rate": _fmt(res["known_answer"]["success_rate"], 2)})
        rows.append(row)
    return rows


def category_table(summary: dict, config: str | None = None) -> list[dict]:
    """One row per category (and one for all) of one setting: n, MD, IF, tracked distance, masked MD, DAI_γ,
    mean ± std."""
    name = config or summary["configs"][0]["name"]
    res = summary["results"][name]
    rows = []
    for cat, m in [*res["categories"].items(), ("(all)", res["overall"])]:
        per_seed = res["per_seed"][str(summary["seeds"][0])]
        n = (per_seed["overall"] if cat == "(all)" else per_seed["categories"][cat])["n_samples"]
        row = {"category": cat, "samples": n, "mean_distance": _fmt(m["mean_distance"], 2),
               "image_fidelity": _fmt(m["image_fidelity"]), "tracked_distance": _fmt(m["tracked_distance"], 2)}
        row.update(_added_columns(m))
        if "known_answer" in m:
            row["placement_error_px"] = _fmt(m["known_answer"]["placement_error_px"], 2)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows of dicts as a Markdown table (columns: every key, in first-seen order)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _points(summary: dict, config: str, where: str = "overall"):
    res = summary["results"][config]
    m = res["overall"] if where == "overall" else res["categories"][where]
    return m["image_fidelity"], m["mean_distance"]


def plot_md_vs_fidelity(summary: dict):
    """Mean Distance (y, lower is better) against Image Fidelity (x, higher is better): the overall point of
    each setting with ± std over seeds, and for a single setting each category. Without fidelity, MD per
    category as bars, titled with the reason."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    configs = [c["name"] for c in summary["configs"]]
    have_if = summary["metrics"]["image_fidelity"] and any(
        _points(summary, c)[0]["mean"] is not None for c in configs)
    have_md = summary["metrics"]["mean_distance"]
    if not have_md:
        ax.text(0.5, 0.5, "Mean Distance was not computed (--no-mean-distance)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    if not have_if:
        res = summary["results"][configs[0]]
        cats = list(res["categories"])
        ax.bar(cats, [res["categories"][c]["mean_distance"]["mean"] or 0 for c in cats],
               yerr=[res["categories"][c]["mean_distance"]["std"] or 0 for c in cats], color="tab:blue")
        ax.set_ylabel("Mean Distance (px, lower is better)")
        ax.set_title("Image Fidelity not computed (--no-fidelity or lpips missing)", fontsize=9)
        ax.tick_params(axis="x", rotation=30)
        return fig
    if len(configs) == 1:
        res = summary["results"][configs[0]]
        for cat in res["categories"]:
            f, d = _points(summary, configs[0], cat)
            if f["mean"] is not None and d["mean"] is not None:
                ax.errorbar(f["mean"], d["mean"], xerr=f["std"] or 0, yerr=d["std"] or 0, fmt="o", alpha=0.6,
                            label=cat)
    for name in configs:
        f, d = _points(summary, name)
        if f["mean"] is None or d["mean"] is None:
            continue
        ax.errorbar(f["mean"], d["mean"], xerr=f["std"] or 0, yerr=d["std"] or 0, fmt="*", ms=12,
                    label="all" if len(configs) == 1 else name)
    ax.set_xlabel("Image Fidelity = 1 - LPIPS (higher is better)")
    ax.set_ylabel("Mean Distance (px, lower is better)")
    ax.set_title(f"{Path(summary['model']).name}: better is lower right "
                 f"({len(summary['seeds'])} seed{'s' if len(summary['seeds']) > 1 else ''})", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_sweep(summary: dict):
    """Each setting of the grid as one point (MD against IF when both exist; else MD per setting as bars)."""
    from matplotlib.figure import Figure

    configs = [c["name"] for c in summary["configs"]]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    f0 = _points(summary, configs[0])[0]
    if summary["metrics"]["image_fidelity"] and f0["mean"] is not None:
        for name in configs:
            f, d = _points(summary, name)
            ax.errorbar(f["mean"], d["mean"], xerr=f["std"] or 0, yerr=d["std"] or 0, fmt="o")
            ax.annotate(name, (f["mean"], d["mean"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("Image Fidelity = 1 - LPIPS (higher is better)")
        ax.set_title(f"{Path(summary['model']).name}: {len(configs)} settings, better is lower right "
                     f"(± std over {len(summary['seeds'])} seed(s))", fontsize=9)
    else:
        md = [_points(summary, c)[1] for c in configs]
        ax.bar(range(len(configs)), [m["mean"] or 0 for m in md], yerr=[m["std"] or 0 for m in md])
        ax.set_xticks(range(len(configs)), configs, rotation=30, ha="right", fontsize=7)
        ax.set_title("Image Fidelity not computed", fontsize=9)
    ax.set_ylabel("Mean Distance (px, lower is better)")
    return fig


# ------------------------------------------------------------------------------------------------ command
def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError("--shard", f"expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise InputError("--shard", f"expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return k, n


def register(sub) -> None:
    """Add ``bench`` to the ``python -m dragnb`` subcommands."""
    p = sub.add_parser("bench", help="run a DragBench-shaped benchmark: edits, metrics, summary, plots",
                       description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--data", required=True,
                   help="DragBench tree: <category>/<sample>/{original_image.png,meta_data.pkl}")
    p.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    p.add_argument("--model", default=None,
                   help="hub id or diffusers folder to edit with (default: the embedded model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                   help="override a setting, e.g. --set drag.max_steps=40; dift.t=261 etc. set the Mean Distance "
                        "featurizer (repeatable)")
    p.add_argument("--seeds", default="0",
                   help="comma-separated run seeds (default 0); each offsets lora.seed and drag.seed")
    p.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="STAGE.FIELD=V1,V2",
                   help="grid over settings (repeat for more axes; use | between values holding commas)")
    p.add_argument("--dift-model", default=None,
                   help=f"model for Mean Distance features (default {metrics.SD21}, the protocol's); 'embedded' or "
                        "'same' (the edited model, loaded separately) for offline use")
    p.add_argument("--no-fidelity", action="store_true", help="skip Image Fidelity (when lpips is not installed)")
    p.add_argument("--no-mean-distance", action="store_true", help="skip Mean Distance")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--offline", action="store_true", help="never use the network to fetch weights")
    p.add_argument("--cache-dir", default=None, help="LoRA/inversion cache (default RUN/cache)")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N usable samples (sorted by category, name)")
    p.add_argument("--categories", default=None, help="comma-separated categories to run (default: all)")
    p.add_argument("--shard", default=None, help="K/N: run every N-th sample starting at K (manual multi-machine)")
    p.add_argument("--merge-only", action="store_true", help="run nothing; summarise the finished records")
    p.add_argument("--score", default=None, metavar="RESULTS",
                   help="score an existing result tree (RESULTS/<category>/<sample>/dragged_image.png, e.g. another "
                        "method's DragBench outputs) instead of editing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=main)


def main(args) -> int:
    """Entry point of ``python -m dragnb bench`` (parsed arguments in, exit code out)."""
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit", f"must be at least 1, got {args.limit}")
    opts = BenchOptions(data=args.data, out=args.out, model=args.model, overrides=list(args.overrides),
                        seeds=parse_seeds(args.seeds), sweeps=list(args.sweeps), dift_model=args.dift_model,
                        fidelity=not args.no_fidelity, mean_distance=not args.no_mean_distance, device=args.device,
                        offline=args.offline or None, cache_dir=args.cache_dir, limit=args.limit,
                        categories=[c for c in (args.categories or "").split(",") if c] or None,
                        shard=_shard(args.shard) if args.shard else None, progress=not args.quiet,
                        merge_only=args.merge_only, score=args.score)
    summary = run_bench(opts)
    if summary is None:
        print(f"process finished its share; the summary is written when every edit is done ({args.out})")
        return 0
    skipped = summary["samples"]["skipped"]
    print(f"wrote {Path(args.out) / 'summary.json'}: {summary['samples']['used']} samples, {skipped} skipped, "
          f"{len(summary['failed'])} failed edits, seeds {summary['seeds']}")
    for s in summary["samples"]["skipped_reasons"]:
        print(f"  skipped {s['path']}: {s['reason']}")
    print(markdown_table(category_table(summary)) if len(summary["configs"]) == 1
          else markdown_table(sweep_table(summary)), end="")
    return 0
