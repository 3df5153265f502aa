"""The workbench's interface: the drag editor (ipycanvas), the run panel, the correspondence view, the plots."""
