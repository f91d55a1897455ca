"""Small helpers every layer uses: JSON files, file digests, provenance."""
