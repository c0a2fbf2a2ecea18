"""Stage 1, the ANN: the QCFS activation, torch.fx tracing, prepare() and the bit regulariser."""
