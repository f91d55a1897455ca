"""Hand-offs to the libraries researchers pass detections between (optional dependencies)."""
