"""Calibration and classification quality maths: pure numpy, defined once for training, live
calibration and reports."""
