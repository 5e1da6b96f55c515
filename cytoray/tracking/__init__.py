"""MLflow: tracking URI resolution, experiments, nested runs, artefacts, registry."""
