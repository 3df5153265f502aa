"""How the embedded model was made, as data and figures: its training log, its scenes, samples, inversion.

The functions behind ``notebooks/08_embedded_model.ipynb`` (``from dragnb.tiny import report``; ``report.x``), one
module per topic; this file only gathers their public names. Data functions return plain dataclasses; figure
functions take those and return a :class:`dragnb.ui.plots.Figure` (never shown, not registered with pyplot).

- :mod:`.training_log`: :func:`read_training_log` parses the ``training_log.jsonl`` that :mod:`dragnb.tiny.train`
  writes (one JSON object a line), :func:`phase_times` sums its minutes per phase, :func:`headline_numbers` picks
  the last evaluations, :func:`training_curves` plots it;
- :mod:`.world`: :func:`model_world` (the world a model was trained on), :func:`held_out_scenes`,
  :func:`scene_gallery` (scenes of the world with their prompts) and :func:`parse_prompt` (the grammar read back);
- :mod:`.samples`: :func:`draw_samples` generates images per prompt and reads them back into words by segmentation
  (:mod:`dragnb.tiny.adherence`); :func:`samples_per_prompt` shows them, :func:`sample_tally` counts them;
- :mod:`.roundtrip`: :func:`inversion_quality` measures the DDIM round trip (invert to the drag's step, denoise,
  decode) against the VAE's own reconstruction, as ``scripts/eval_inversion.py`` does; :func:`inversion_figure`
  shows it;
- :mod:`.components`: :func:`architecture` and :func:`tokens` describe the model (with :func:`markdown_table`
  and :func:`thousands` from :mod:`dragnb.tables` for its tables);
- :mod:`.benchmark`: :func:`scene_benchmark_rows`, the shipped drag-benchmark figures as table rows.
"""

from dragnb.tables import markdown_table, thousands
from dragnb.tiny.report.components import Component, architecture, tokens
from dragnb.tiny.report.benchmark import SCENE_BENCHMARK_COLUMNS, scene_benchmark_rows
from dragnb.tiny.report.roundtrip import RoundTrip, inversion_figure, inversion_quality, round_trip_summary
from dragnb.tiny.report.samples import (Sample, draw_samples, read_shapes, sample_tally, samples_per_prompt,
                                        score_image)
from dragnb.tiny.report.training_log import (Curve, Event, PhaseTime, TrainingLog, headline_numbers, last_adherence,
                                             phase_times, read_training_log, training_curves)
from dragnb.tiny.report.world import HELD_OUT_SEED, held_out_scenes, model_world, parse_prompt, scene_gallery

__all__ = [
    "HELD_OUT_SEED", "SCENE_BENCHMARK_COLUMNS", "Component", "Curve", "Event", "PhaseTime", "RoundTrip", "Sample",
    "TrainingLog", "architecture", "draw_samples", "headline_numbers", "held_out_scenes", "inversion_figure",
    "inversion_quality", "last_adherence", "markdown_table", "model_world", "parse_prompt", "phase_times",
    "read_shapes", "read_training_log", "round_trip_summary", "sample_tally", "samples_per_prompt",
    "scene_benchmark_rows", "scene_gallery", "score_image", "thousands", "tokens", "training_curves",
]
