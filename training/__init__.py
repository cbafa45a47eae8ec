"""Model training: the label, the dataset from ClickHouse, the time split and the CatBoost job.
Imported by the training CLI and the retrain job only: never on the scoring path or the API's
start-up (CatBoost training is heavy)."""
