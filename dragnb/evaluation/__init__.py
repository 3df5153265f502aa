"""Evaluation: DragBench's format, the field's metrics, the scene benchmark with known answers, the bench runner."""
