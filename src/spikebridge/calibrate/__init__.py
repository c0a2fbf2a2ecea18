"""Stage 5, calibration of a converted SNN: FTBC and surrogate-gradient fine-tuning."""
