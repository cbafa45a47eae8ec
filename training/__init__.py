"""Model training: the label, the dataset from ClickHouse, the time split and the CatBoost job.
The CatBoost job (train.py) is imported by the training CLI, the API's training route and the
retrain job only: never on the scoring path or the API's
start-up (CatBoost training is heavy)."""
