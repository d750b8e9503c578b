"""Population warnings."""
