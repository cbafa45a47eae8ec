"""Evidently HTML reports of a stream's model (data drift, classification quality) and their
``drift_reports`` rows. Evidently is imported only inside the build functions: never on the
scoring path or at the API's start-up (it takes 4-9 s and ~290 MB to import)."""
