"""Stage 6, analysis: evaluation, verification, operations and energy, reports."""
