"""Model training: the label, the dataset from ClickHouse, the time split and the CatBoost job.
The CatBoost job (``train.py``) is imported only by the training CLI, the API's training route
and the retrain job: never on the scoring path or at the API's start-up (it is heavy). The label
(``labels.py``) is light and also serves the monitor's realized outcomes."""
