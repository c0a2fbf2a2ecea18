"""Stage 4, the spiking network: the neuron protocol and neurons, codings, and the execution engine."""
