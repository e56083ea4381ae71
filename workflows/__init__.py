"""pesflow: workflows."""
