"""dragnb: DragDiffusion on diffusers models, stage by stage."""
