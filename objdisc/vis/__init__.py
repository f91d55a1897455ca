"""Pictures: charts (plots), per-image figures (panels), the HTML gallery (gallery)."""
