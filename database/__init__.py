"""pesflow: database."""
