"""Stage 3, conversion: the op table, graph passes, the method registry and its methods, threshold maths."""
