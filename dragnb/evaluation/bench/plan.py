"""The bench's plan: sample discovery, sweep and seed parsing, options, fingerprints, result folders."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple


from ...errors import DragnbError, InputError

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
    """Read every sample (:func:`dragnb.evaluation.dragbench.read_sample`); malformed ones become :class:`Skipped`."""
    from ..dragbench import read_sample

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
    """Settings for run seed ``seed``: the LoRA seed offset by it (seed 0 leaves it as it is); the drag and the
    denoising draw no random numbers."""
    return dataclasses.replace(settings, lora=dataclasses.replace(settings.lora, seed=settings.lora.seed + seed))


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
    sample: object  # dragnb.evaluation.dragbench.Sample
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


LAUNCHER_WORLD_SIZE = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")  # torchrun, MPI


@dataclass(frozen=True)
class Checked:
    """What :func:`check` read and checked: everything the run needs before a model loads."""

    out: Path  # the run folder, writable
    stage_overrides: list[str]  # --set for the method's stages (dift.* apart)
    dift: Any  # the Mean Distance featurizer's settings (dragnb.evaluation.dift_settings.DiftSettings)
    configs: list[BenchConfig]  # the points of the --sweep grid
    samples: list  # (SampleRef, Sample) of the usable samples
    skipped: list[Skipped]  # and the others, each with its reason
    model_name: str
    base: Any  # Settings: the model's defaults with --set
    config_settings: dict  # config name -> its Settings


def check(opts: BenchOptions) -> Checked:
    """Every check of the bench's arguments, files, samples and settings, before torch or diffusers load (issue 26).
    A problem is one :class:`~dragnb.errors.InputError`."""
    from ...config import EMBEDDED_MODEL, apply_overrides, model_defaults
    from ...files import open_cache, writable_folder
    from ..dift_settings import DiftSettings, parse_dift_overrides

    out = writable_folder(opts.out, "--out")
    stage_overrides, dift_overrides = split_overrides(opts.overrides)
    configs = parse_sweeps(opts.sweeps)
    for config in configs:
        if split_overrides(list(config.assignments))[1]:
            raise InputError("--sweep", "sweep the method's settings, not the metric's (dift.*)")
    try:
        dift = parse_dift_overrides(DiftSettings(), dift_overrides)
    except ValueError as exc:
        raise InputError("--set", str(exc)) from None
    if opts.dift_model is not None:
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
    if not samples:  # nothing to edit: say why in one line, and keep the reasons beside the results
        out.mkdir(parents=True, exist_ok=True)
        (out / "skipped.json").write_text(json.dumps([dataclasses.asdict(s) for s in skipped], indent=1) + "\n")
        first = f" (first: {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise InputError("--data", f"no usable sample in {str(opts.data)!r}: {len(skipped)} skipped{first}; the "
                         f"reasons are in {str(out / 'skipped.json')!r}; a sample is <category>/<name>/ with "
                         "original_image.png and meta_data.pkl")
    if opts.cache_dir is not None:
        open_cache(opts.cache_dir, "--cache-dir")

    # Settings: the model's own defaults, then --set, then each sweep point, then each seed.
    model_name = str(EMBEDDED_MODEL if opts.model is None else opts.model) if opts.score is None \
        else f"results in {opts.score}"
    local = Path(model_name).expanduser()
    try:
        base = apply_overrides(model_defaults(local if local.is_dir() else None), stage_overrides)
        config_settings = {c.name: apply_overrides(base, list(c.assignments)) for c in configs}
        dtypes = sorted({s.compute.weights for s in config_settings.values()})
        if len(dtypes) > 1:
            raise InputError("--sweep", f"compute.weights takes one value per bench run, got {', '.join(dtypes)} (the "
                             "model loads once, in one dtype); run the bench once per dtype")
    except InputError:  # names the setting at fault already
        raise
    except ValueError as exc:
        raise InputError("--set/--sweep", str(exc)) from None
    return Checked(out, stage_overrides, dift, configs, samples, skipped, model_name, base, config_settings)


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


