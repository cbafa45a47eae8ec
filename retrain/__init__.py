"""Auto-retrain: when drift or the calibration streak says so, train a candidate, evaluate it and
promote it only by the rules (``auto.py``), one retrain per stream at a time across processes
(``lock.py``, a lock on Kafka)."""
