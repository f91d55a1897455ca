"""What a run looks like to a reader: paper tables, per-image pictures (panels, charts) and the HTML gallery."""
