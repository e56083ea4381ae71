"""pesflow: api."""
