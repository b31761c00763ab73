"""pqd's Grafana dashboards as code, on grafana-foundation-sdk (a test extra of pyproject.toml:
a build-time dependency, never imported by the daemon). grafana/generate.py writes them.

- queries.py: the selectors and PromQL helpers every query is built from
- panels.py: the panel kinds, so that panels of a kind look alike
- layout.py: rows of lines of panels on the 24-column grid
- rows/: one module per row of the overview, top to bottom
- overview.py: the overview dashboard (variables, annotations, rows)
"""
