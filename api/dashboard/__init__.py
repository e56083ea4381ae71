"""The dashboard: Jinja2 pages and self-served static JS/CSS (no CDN)."""
