"""What operators see and run: health and status, the deployment check, activity records, telemetry."""
