"""pesflow: mlip_core."""
