"""Plan -> launch bundle (jinja2 templates)."""
