-- Run by the postgres image on its first start (empty data volume): MLflow's auth app keeps
-- users and permissions in their own database, next to runs and registry in `mlflow`.
CREATE DATABASE mlflow_auth OWNER mlflow;
