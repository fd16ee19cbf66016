-- Runs once, when the postgres volume is first initialised: the MLflow server's backend store lives
-- beside Airflow's metadata database (POSTGRES_DB) in the same server.
CREATE DATABASE mlflow;
