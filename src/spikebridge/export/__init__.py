"""Stage 7, export: data-only SNN files and NIR graphs."""
